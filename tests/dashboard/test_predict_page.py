"""Draw & predict in AppTest: each source keeps its own answer, bad input, the hand-off to Explain."""
from __future__ import annotations

import numpy as np

from dashboard.widgets import plain
from tests.dashboard.conftest import assert_clean, canvas_payload, goto, open_tab
from tests.dashboard.pages_helpers import finished_runs

# The page's tab labels (dashboard/app_pages/predict.py SOURCES; the page cannot be imported outside a run)
SOURCES = [":material/draw: Draw", ":material/upload: Upload", ":material/casino: Test image"]


def test_predict_page_reads_an_injected_drawing(app):
    from core.data.drawings import draw_digit

    canvas = draw_digit(7, np.random.default_rng(3))
    app.run()
    goto(app, "predict")
    app.session_state["predict_canvas_0"] = canvas_payload(canvas)
    app.run()
    assert_clean(app)
    verdicts = [m.value for m in app.markdown if m.value.startswith("### ")]
    assert verdicts and "**7**" in verdicts[0]
    # The starter reads through a glow (core.models.zoo.Glow) the 28×28 image does not show: the page says so
    assert any("soft glow" in block.proto.body for block in app.get("html"))


def test_predict_page_says_draw_something_for_an_empty_canvas(app):
    from core.data.drawings import draw_digit

    app.run()
    goto(app, "predict")
    app.session_state["predict_canvas_0"] = canvas_payload(draw_digit(2, np.random.default_rng(1)))
    app.run()
    assert any(m.value.startswith("### ") for m in app.markdown)  # the canvas is read: a verdict
    app.session_state["predict_canvas_0"] = canvas_payload(np.zeros((280, 280, 4), np.uint8))
    app.run()
    assert_clean(app)
    assert any("Draw a digit" in i.value for i in app.info)
    assert not any(m.value.startswith("### ") for m in app.markdown)  # and the old verdict is gone


def test_each_source_keeps_its_own_answer(app):
    from core.data.drawings import draw_digit

    app.run()
    app.selectbox(key="app_dataset").set_value("digits").run()
    goto(app, "predict")
    open_tab(app, "predict_source", SOURCES[2])
    app.button(key="predict_random").click().run()  # a test image first ...
    sampled = [m.value for m in app.markdown if m.value.startswith("### ")]
    assert len(sampled) == 1
    open_tab(app, "predict_source", SOURCES[0])
    app.session_state["predict_canvas_0"] = canvas_payload(draw_digit(1, np.random.default_rng(0)))
    app.run()  # ... then a drawing of a 1
    assert_clean(app)
    drawn = [m.value for m in app.markdown if m.value.startswith("### ")]
    assert len(drawn) == 1 and "**1**" in drawn[0]  # only the open tab's answer is on screen
    open_tab(app, "predict_source", SOURCES[2])
    assert [m.value for m in app.markdown if m.value.startswith("### ")] == sampled  # the test image kept its own


def test_with_fashion_chosen_the_digit_model_still_reads_its_own_test_images_and_the_sidebar_says_so(app):
    app.run()
    app.selectbox(key="app_dataset").set_value("fashion-mnist").run()
    assert app.session_state["app_dataset_resolved"] == "fashion-mnist"
    notes = [i.value for i in app.sidebar.info]
    assert notes == ["This model reads MNIST handwritten digits: Draw & predict, Evaluate and Explain use that. "
                     "For Fashion-MNIST clothing, train a model on it and pick it here."]
    goto(app, "predict")
    open_tab(app, "predict_source", SOURCES[2])
    app.button(key="predict_random").click().run()
    assert_clean(app)
    caption = next(p.caption for image in app.get("image") for p in image.proto.imgs if "true label" in p.caption)
    assert caption.rsplit(" ", 1)[1] in "0123456789"  # an MNIST digit, not a sandal read by a digit model
    app.selectbox(key="app_dataset").set_value("mnist").run()
    assert not app.sidebar.info


def test_explain_from_draw_and_predict_keeps_the_model_that_read_the_drawing(app, tmp_path):
    from core.data.drawings import draw_digit

    store, ids = finished_runs(tmp_path / "home", n=2)
    app.run()
    goto(app, "predict")
    app.multiselect(key="predict_models").set_value([ids[0]]).run()  # not the sidebar's starter
    app.session_state["predict_canvas_0"] = canvas_payload(draw_digit(6, np.random.default_rng(2)))
    app.run()
    app.button(key="predict_explain_Draw & predict").click().run()
    assert_clean(app)
    assert app.title[0].value == "Explain"
    assert app.radio(key="explain_source").value == "The image from Draw & predict"
    assert next(m.value for m in app.markdown if " reads **" in m.value).startswith(f"**{plain(store.get(ids[0]).name)}**")
    assert not [c for c in app.caption if "averaged" in c.value]  # one model read it: nothing to add


def test_explain_from_an_ensemble_says_which_one_model_it_explains(app, tmp_path):
    from core.data.drawings import draw_digit

    store, ids = finished_runs(tmp_path / "home", n=2)
    app.run()
    goto(app, "predict")
    app.multiselect(key="predict_models").set_value([ids[1], "starter", ids[0]]).run()
    app.session_state["predict_canvas_0"] = canvas_payload(draw_digit(6, np.random.default_rng(2)))
    app.run()
    app.button(key="predict_explain_Draw & predict").click().run()
    assert_clean(app)
    first = plain(store.get(ids[1]).name)
    assert next(m.value for m in app.markdown if " reads **" in m.value).startswith(f"**{first}**")
    note = next(c.value for c in app.caption if "averaged" in c.value)
    assert note.startswith(plain("Draw & predict averaged 3 models (")) and f"the first of them, {first}" in note


def test_predict_page_reads_an_uploaded_photo_of_dark_ink_on_paper(app):
    import io

    from PIL import Image

    from core.data.drawings import draw_digit

    alpha = draw_digit(4, np.random.default_rng(5))[..., 3]
    paper = Image.fromarray((255 - alpha * 0.8).astype(np.uint8), "L")  # dark ink on white paper
    buffer = io.BytesIO()
    paper.save(buffer, format="JPEG")
    app.run()
    goto(app, "predict")
    open_tab(app, "predict_source", SOURCES[1])
    app.file_uploader(key="predict_upload").upload("four.jpg", buffer.getvalue(), "image/jpeg").run()
    assert_clean(app)
    verdicts = [m.value for m in app.markdown if m.value.startswith("### ")]
    assert verdicts and "**4**" in verdicts[0]
    # Another tab, then back: the uploader comes back empty (a browser forgets the file), the upload and its answer do not
    open_tab(app, "predict_source", SOURCES[0])
    open_tab(app, "predict_source", SOURCES[1])
    assert_clean(app)
    assert app.file_uploader(key="predict_upload").value is None
    assert [m.value for m in app.markdown if m.value.startswith("### ")] == verdicts[:1]
    assert f"Your upload, {plain('four.jpg')}" in [p.caption for image in app.get("image") for p in image.proto.imgs]
    app.slider(key="predict_threshold").set_value(0.5).run()  # any later rerun keeps it too
    assert [m.value for m in app.markdown if m.value.startswith("### ")] == verdicts[:1]
    app.button(key="predict_upload_remove").click().run()
    assert not [m.value for m in app.markdown if m.value.startswith("### ")]
    assert any("Upload a photo or scan" in i.value for i in app.info)
    # Removing the file from the uploader itself forgets it too
    app.file_uploader(key="predict_upload").upload("four.jpg", buffer.getvalue(), "image/jpeg").run()
    assert [m.value for m in app.markdown if m.value.startswith("### ")] == verdicts[:1]
    app.file_uploader(key="predict_upload").clear().run()
    assert not [m.value for m in app.markdown if m.value.startswith("### ")]


def test_draw_and_predict_keeps_its_models_and_threshold_across_pages_and_follows_the_sidebar(app, tmp_path):
    store, ids = finished_runs(tmp_path / "home", n=2)
    app.run()
    goto(app, "predict")
    app.multiselect(key="predict_models").set_value(["starter", ids[0]]).run()  # an ensemble of two
    app.slider(key="predict_threshold").set_value(0.95).run()
    app.slider(key="predict_brush").set_value(30).run()
    goto(app, "home")  # Streamlit forgets the values of widgets a run does not draw
    goto(app, "predict")
    assert_clean(app)
    assert app.multiselect(key="predict_models").value == ["starter", ids[0]]
    assert app.slider(key="predict_threshold").value == 0.95 and app.slider(key="predict_brush").value == 30
    store.delete(ids[0])  # a model deleted meanwhile (on Runs, or by another visitor) leaves the list
    app.run()
    assert_clean(app)
    assert app.multiselect(key="predict_models").value == ["starter"]
    app.sidebar.selectbox(key="app_run").set_value(ids[1]).run()  # the sidebar's model: the page follows it at once
    assert_clean(app)
    assert app.multiselect(key="predict_models").value == [ids[1]]
    assert app.slider(key="predict_threshold").value == 0.95  # the rest is kept
    verdict = app.multiselect(key="predict_models").set_value([]).run()  # emptied on purpose: stays empty, says why
    assert any("Choose at least one model" in i.value for i in verdict.info)


def test_a_threshold_above_what_a_label_smoothed_model_says_is_explained(app):
    # The starter trained with label smoothing 0.1: sure and right, it says about 91%. A tester set 0.95 for a demo.
    app.run()
    goto(app, "predict")
    warning = "trained with label smoothing 0.1: even its right answers mostly read about 91% sure"
    assert not [c for c in app.caption if warning in c.value]
    app.slider(key="predict_threshold").set_value(0.95).run()
    assert_clean(app)
    assert [c for c in app.caption if warning in c.value]
    app.slider(key="predict_threshold").set_value(0.85).run()
    assert not [c for c in app.caption if warning in c.value]

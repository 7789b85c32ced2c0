"""Drawing sets in the dashboard: saving from Draw & predict, the Drawings page's gallery, corrections, import and
export, scores, the threshold hand-off, retraining, and who may change what on a shared server."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from tests.dashboard.conftest import assert_clean, canvas_payload, goto, open_tab

# The Drawings page's tabs (dashboard/app_pages/drawings.py TABS; the page cannot be imported outside a run)
GALLERY, SCORES, THRESHOLD, RETRAIN, FILES = [
    ":material/photo_library: Gallery", ":material/leaderboard: Scores", ":material/tune: Threshold",
    ":material/model_training: Retrain", ":material/import_export: Import & export"]


def _set_with(home, name="Class 3B", digits=(1, 7, 7, 3, 0, 2), drawer="me", wrong_verdict_for=()):
    """A set of generated drawings (with a verdict of 'starter' saying the label, or label+1 where asked)."""
    from core.data.drawing_sets import DrawingStore, Verdict
    from core.data.drawings import draw_digit
    from core.data.preprocess import to_model_input

    sets = DrawingStore(home)
    s = sets.create_set(name, owner=drawer)
    for i, digit in enumerate(digits):
        canvas = draw_digit(digit, np.random.default_rng(i))
        said = (digit + 1) % 10 if i in wrong_verdict_for else digit
        sets.add(s.id, to_model_input(canvas), canvas, label=digit, drawer=drawer,
                 verdict=Verdict("starter", said, 0.5 + 0.05 * i))
    return sets, s.id


def _draw(app, digit, seed):
    from core.data.drawings import draw_digit

    app.session_state["predict_canvas_0"] = canvas_payload(draw_digit(digit, np.random.default_rng(seed)))
    return app.run()


def test_saving_from_draw_and_predict_keeps_the_true_label_and_the_verdict(app, tmp_path):
    from core.data.drawing_sets import DrawingStore

    app.run()
    goto(app, "predict")
    _draw(app, 7, 3)
    app.button(key="predict_save_right").click().run()  # the model is right: one click
    assert_clean(app)
    assert any("Saved as 7 in My digits" in t.value for t in app.toast)
    assert any("Saved as **7**" in c.value for c in app.caption)
    _draw(app, 2, 1)
    said = next(m.value for m in app.markdown if m.value.startswith("### "))
    assert not app.pills  # "No — save as…" is filled in only when opened
    app.session_state["predict_save_as"] = True  # open it (AppTest has no click for popovers)
    app.run()
    app.pills[0].set_value(5).run()  # it was a 5
    app.button(key="predict_save_wrong").click().run()
    assert_clean(app)
    sets = DrawingStore(tmp_path / "home")
    (mine,) = sets.list_sets()
    assert mine.name == "My digits" and mine.owner == app.session_state["visitor_id"]
    first, second = sets.drawings(mine.id)
    assert (first.label, first.verdict.predicted, first.verdict.model_key) == (7, 7, "starter")
    assert second.label == 5 and f"**{second.verdict.predicted}**" in said
    assert second.drawer == app.session_state["visitor_id"] and second.model_input.shape == (28, 28)
    assert sets.canvas_png(second.id).startswith(b"\x89PNG")


def test_draw_and_predict_saves_into_a_new_named_set_with_the_drawers_name(app, tmp_path):
    from core.data.drawing_sets import DrawingStore

    _set_with(tmp_path / "home", "Class 3B", digits=(1,))
    app.run()
    goto(app, "predict")
    _draw(app, 7, 3)
    app.selectbox(key="predict_save_set").set_value("__new__").run()
    app.text_input(key="predict_save_new").input("Ada's digits").run()
    app.text_input(key="predict_save_drawer").input("Ada").run()
    app.button(key="predict_save_right").click().run()
    assert_clean(app)
    found = DrawingStore(tmp_path / "home").resolve("Ada's digits")
    (drawing,) = DrawingStore(tmp_path / "home").drawings(found.id)
    assert drawing.drawer_name == "Ada" and drawing.label == 7


PICK = "Drawing to correct or delete"


def _box(app, label: str):
    """A select box by its label: the drawing and set boxes' keys change with their options' texts."""
    return next(b for b in app.selectbox if b.label == label)


def test_the_drawings_page_shows_filters_relabels_and_deletes(app, tmp_path):
    sets, set_id = _set_with(tmp_path / "home", wrong_verdict_for=(1,))
    app.run()
    goto(app, "drawings")
    assert_clean(app)
    captions = [p.caption for p in app.get("image")[0].proto.imgs]
    assert "#2 · 7 ✗ said 8" in captions and "#1 · 1 ✓" in captions and len(captions) == 6
    app.selectbox(key="drawings_f_label").set_value(7).run()
    assert any("2 of 6 drawings match" in c.value for c in app.caption)
    app.selectbox(key="drawings_f_verdict").set_value("wrong ✗").run()
    assert any("1 of 6 drawings match" in c.value for c in app.caption)
    assert _box(app, PICK).value == 2
    app.selectbox(key="drawings_relabel_2").set_value(1).run()
    app.button(key="drawings_relabel").click().run()
    assert_clean(app)
    assert sets.get(2).label == 1
    app.selectbox(key="drawings_f_label").set_value(None).run()
    app.selectbox(key="drawings_f_verdict").set_value("any").run()
    assert _box(app, PICK).value == 2 and "#2 · 1 ✗ said 8" in _box(app, PICK).options  # its new label shows
    _box(app, PICK).set_value(4).run()
    digests, labels_before = [d.digest for d in sets.drawings(set_id)], {d.id: d.label for d in sets.drawings(set_id)}
    app.button(key="drawings_delete").click().run()
    assert_clean(app)
    assert [d.id for d in sets.drawings(set_id)] == [1, 2, 3, 5, 6]
    # The box is drawn anew without the deleted drawing: what it shows is what Delete would delete next, never #4
    # shown while another is acted on (a tester's second Delete removed a drawing never chosen)
    box = _box(app, PICK)
    assert "#4" not in " ".join(box.options) and box.value == 1 and box.index == 0
    assert any("Drawing set" == b.label and "(5)" in b.options[b.index] for b in app.selectbox)  # its count, now
    # One click deleted it, one click puts it back (as a new number, the same drawing)
    app.button(key="drawings_undo_delete").click().run()
    assert_clean(app)
    back = sets.drawings(set_id)
    assert len(back) == 6 and "drawings_undo_delete" not in [b.key for b in app.button]
    assert sorted(d.digest for d in back) == sorted(digests)
    assert [d.label for d in back if d.digest == digests[3]] == [labels_before[4]]  # #4 was the fourth


def test_an_exported_set_imports_again_bit_for_bit_through_the_page(app, tmp_path):
    from core.data.drawing_files import export_bytes

    sets, set_id = _set_with(tmp_path / "home")
    app.run()
    goto(app, "drawings")
    open_tab(app, "drawings_tab", FILES)
    assert app.get("download_button")  # the export button is there
    data = export_bytes(sets, set_id)
    app.file_uploader(key="drawings_upload_0").upload("class3b.zip", data, "application/zip").run()
    app.radio(key="drawings_import_into").set_value("new").run()
    app.text_input(key="drawings_import_name").input("Copy").run()
    app.button(key="drawings_import").click().run()
    assert_clean(app)
    assert any("Imported 6 drawings into Copy" in s.value for s in app.success)
    copy = sets.resolve("Copy")
    before, after = sets.drawings(set_id), sets.drawings(copy.id)
    assert [d.label for d in before] == [d.label for d in after]
    assert all(np.array_equal(a.model_input, b.model_input) for a, b in zip(before, after))
    assert _box(app, "Drawing set").value == copy.id  # the page moves to the imported set


def test_an_exported_set_imported_as_a_new_set_keeps_its_name_or_a_copys(app, tmp_path):
    from core.data.drawing_files import export_bytes

    sets, set_id = _set_with(tmp_path / "home")
    app.run()
    goto(app, "drawings")
    open_tab(app, "drawings_tab", FILES)
    app.file_uploader(key="drawings_upload_0").upload("class3b.zip", export_bytes(sets, set_id), "application/zip").run()
    app.radio(key="drawings_import_into").set_value("new").run()
    assert app.text_input(key="drawings_import_name").placeholder == "Class 3B – copy"  # "Class 3B" is taken here
    app.button(key="drawings_import").click().run()  # the name left empty: the suggestion is taken
    assert_clean(app)
    copy = sets.resolve("Class 3B – copy")
    assert copy.count == 6 and sets.get_set(set_id).count == 6  # a new set: nothing added to the original


def test_a_hostile_zip_is_refused_with_a_sentence_and_imports_nothing(app, tmp_path):
    sets, set_id = _set_with(tmp_path / "home")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("3/fine.png", b"not really a png")
        zf.writestr("../../etc/evil.png", b"x")
    app.run()
    goto(app, "drawings")
    open_tab(app, "drawings_tab", FILES)
    app.file_uploader(key="drawings_upload_0").upload("evil.zip", buffer.getvalue(), "application/zip").run()
    app.button(key="drawings_import").click().run()
    assert not app.exception
    assert any("evil.zip/../../etc/evil.png" in e.value and "outside" in e.value for e in app.error)
    said = [e.value for e in app.error] + [c.value for c in app.caption]
    assert sum("Nothing was imported." in text for text in said) == 1  # said once, in the refusal itself
    assert [s.count for s in sets.list_sets()] == [6]


def test_the_score_table_includes_the_starter_and_the_sidebar_model_is_scored(app, tmp_path):
    _set_with(tmp_path / "home")
    app.run()
    goto(app, "drawings")
    open_tab(app, "drawings_tab", SCORES)
    assert_clean(app)
    table = app.dataframe[0].value
    assert "Starter model" in " ".join(table["model"]) and table["accuracy"].is_monotonic_decreasing
    assert table.iloc[list(table["model"]).index(next(m for m in table["model"] if "Starter" in m))][""] == "◀ sidebar"
    assert app.metric[0].label == "Accuracy"
    assert app.get("plotly_chart")  # the confusion matrix and the threshold curve


def test_use_this_threshold_sets_the_draw_and_predict_slider(app, tmp_path):
    from core.data.drawing_parts import images
    from core.inference.drawing_scores import lowest_threshold, score_model

    sets, set_id = _set_with(tmp_path / "home", digits=(1, 7, 7, 3, 0, 2, 4, 4, 9, 8))
    sets.relabel(3, 9)  # a mislabelled 7: the starter is "wrong" on it, so 100% needs a threshold (or is out of reach)
    score = score_model(None, sets, set_id, "starter")
    target = next((t for t in np.arange(0.8, 1.0001, 0.005) if (lowest_threshold(score.probs, score.labels, t)
                                                               .threshold or 0) > 0), None)
    if target is None:
        pytest.skip("the starter is equally sure of every drawing here")
    expected = lowest_threshold(score.probs, score.labels, target).threshold
    app.run()
    goto(app, "drawings")
    open_tab(app, "drawings_tab", THRESHOLD)
    app.slider(key="drawings_target").set_value(float(target)).run()
    app.button(key="drawings_use_threshold").click().run()
    assert_clean(app)
    goto(app, "predict")
    assert_clean(app)
    assert app.slider(key="predict_threshold").value == pytest.approx(expected)
    assert images(sets, set_id).x.shape[0] == 10


def test_fine_tune_on_this_set_queues_a_run_with_the_set(app, tmp_path):
    from core.runs import RunStore

    sets, set_id = _set_with(tmp_path / "home")
    app.run()
    goto(app, "drawings")
    open_tab(app, "drawings_tab", RETRAIN)
    app.number_input(key="drawings_retrain_factor").set_value(3).run()
    app.button(key="drawings_retrain").click().run()
    assert_clean(app)
    from dashboard.state import job_manager

    for job in job_manager().active():
        job_manager().stop(job.id)
    (run,) = RunStore(tmp_path / "home").list()
    assert run.config["drawings"] == set_id and run.config["drawings_factor"] == 3
    assert run.config["init_from"] == "starter" and run.config["extra"]["visitor"] == app.session_state["visitor_id"]
    assert any("Fine-tuning queued" in s.value for s in app.success)


def test_the_fine_tuning_runs_name_follows_start_from_and_the_table_names_its_model(app, tmp_path):
    # A tester chose another model in "Start from": the name still said "Starter model (shipped) + …", and the run
    # fine-tuned from tiny mlp was saved under the starter's name, its "from" column a bare run id
    from tests.dashboard.pages_helpers import finished_runs

    sets, set_id = _set_with(tmp_path / "home")
    store, ids = finished_runs(tmp_path / "home", n=1)  # a seed-mlp on the built-in digits
    app.run()
    goto(app, "drawings")
    open_tab(app, "drawings_tab", RETRAIN)
    assert app.text_input(key=f"drawings_retrain_name_starter_{set_id}").value == "Starter model (shipped) + Class 3B"
    app.selectbox(key="drawings_retrain_from").set_value(ids[0]).run()
    assert app.text_input(key=f"drawings_retrain_name_{ids[0]}_{set_id}").value == "run seed-mlp + Class 3B"
    app.button(key="drawings_retrain").click().run()
    assert_clean(app)
    from dashboard.state import job_manager

    for job in job_manager().active():
        job_manager().stop(job.id)
    run = next(r for r in store.list() if r.config.get("drawings") == set_id)
    assert run.name == "run seed-mlp + Class 3B" and run.config["init_from"] == ids[0]
    app.run()
    table = app.dataframe[-1].value  # the fine-tuning runs' table
    assert list(table["from"]) == ["run seed-mlp"]


def test_on_a_shared_server_only_the_drawer_may_relabel_and_only_the_creator_may_rename(app, tmp_path, monkeypatch):
    monkeypatch.setenv("DIGIT_LAB_SHARED", "1")
    sets, set_id = _set_with(tmp_path / "home", drawer="someone else")
    app.run()
    goto(app, "drawings")
    assert_clean(app)
    assert app.button(key="drawings_delete").disabled and app.selectbox(key="drawings_relabel_1").disabled
    assert any("created by another visitor" in c.value for c in app.caption)


def test_evaluate_judges_the_model_on_a_drawing_set_and_hands_retraining_to_the_drawings_page(app, tmp_path):
    from core.inference.drawing_scores import score_model
    from sklearn.metrics import accuracy_score

    sets, set_id = _set_with(tmp_path / "home", digits=(1, 7, 7, 3, 0, 2, 4, 4, 9, 8))
    sets.relabel(3, 9)  # one drawing the starter is bound to get "wrong"
    score = score_model(None, sets, set_id, "starter")
    app.run()
    goto(app, "evaluate")
    assert "Class 3B" in app.selectbox(key="eval_data").options[1]  # offered beside the test set
    app.selectbox(key="eval_data").set_value(set_id).run()
    assert_clean(app)
    assert any("10 drawings of the set" in c.value for c in app.caption)
    accuracy = accuracy_score(score.labels, score.predictions)
    assert app.metric[0].value == f"{accuracy:.2%}" and app.metric[1].value == str(len(score.mistakes))
    open_tab(app, "eval_tab", "Mistakes")
    galleries = [p.caption for image in app.get("image") for p in image.proto.imgs]
    assert any(c.startswith("true 9 · said 7") for c in galleries)  # the relabelled drawing is among the mistakes shown
    open_tab(app, "eval_tab", "Retrain on hard cases")
    app.button(key="eval_retrain_drawings").click().run()  # the Retrain tab offers the Drawings page
    assert_clean(app)
    assert _box(app, "Drawing set").value == set_id and app.session_state["drawings_tab"] == RETRAIN
    assert app.number_input(key="drawings_retrain_factor")  # the Retrain tab is the open one
    goto(app, "evaluate")
    assert app.selectbox(key="eval_data").value == set_id  # the choice stays while the visitor moves around


def test_explain_explains_a_drawing_from_a_set_with_its_true_label(app, tmp_path):
    sets, set_id = _set_with(tmp_path / "home")
    app.run()
    goto(app, "explain")
    app.radio(key="explain_source").set_value("A drawing from a set").run()
    app.number_input(key="explain_drawing").set_value(3).run()  # the set's fourth drawing: a 3
    assert_clean(app)
    third = sets.drawings(set_id)[3]
    assert any(f"Drawing #{third.id} in the gallery, labelled **3**" in c.value for c in app.caption)
    assert any("the true label is **3**" in m.value for m in app.markdown)

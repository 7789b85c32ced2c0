"""Robustness & privacy in AppTest: an attack handed to Explain, background curves and corruptions, privacy."""
from __future__ import annotations

from core.training.config import TrainConfig
from core.training.experiment import create_run, execute_run
from tests.dashboard.conftest import assert_clean, goto, open_tab
from tests.dashboard.pages_helpers import finished_runs, open_with_model


def test_robustness_page_attacks_an_image_and_hands_it_to_explain(app, tmp_path):
    store, ids = finished_runs(tmp_path / "home", n=2)
    open_with_model(app, "robustness", ids[1])
    assert_clean(app)
    app.radio(key="robust_attack").set_value("pgd").run()
    app.slider(key="robust_eps").set_value(0.3).run()
    verdict = next(m.value for m in app.markdown if m.value.startswith(("**The attack worked:**", "**The model held:**")))
    assert "at most 0.30" in verdict
    assert verdict.startswith("**The attack worked:**")  # PGD at 0.3 fools a model trained for 10 steps
    app.button(key="robust_explain").click().run()
    assert_clean(app)
    assert app.title[0].value == "Explain"
    assert app.radio(key="explain_source").value == "The image from Robustness & privacy"


def test_an_attack_on_a_mistake_says_the_model_was_wrong_before_and_shows_the_true_label(app, tmp_path):
    # A tester attacked "a mistake of this model": "The attack worked: … read 7 and now reads 4" of a 1, its label
    # nowhere on the page
    store, ids = finished_runs(tmp_path / "home", n=1)  # a seed MLP trained for seconds: it makes mistakes
    open_with_model(app, "robustness", ids[0])
    app.radio(key="robust_source").set_value("A mistake of this model").run()
    assert_clean(app)
    verdict = next(m.value for m in app.markdown if " now reads **" in m.value)
    assert verdict.startswith("**Wrong before the attack:**") and "The image is a **" in verdict
    caption = next(p.caption for image in app.get("image") for p in image.proto.imgs if p.caption.startswith("original"))
    assert caption.startswith("original, true label ") and caption[-1] in "0123456789"
    assert caption[-1] != verdict.split(" read **", 1)[1][0]  # the model's first answer was not the label


def test_robustness_curves_run_in_the_background_and_show_when_done(app, tmp_path):
    from dashboard.state import task_runner

    store, ids = finished_runs(tmp_path / "home", n=1)
    open_with_model(app, "robustness", ids[0])
    open_tab(app, "robust_tab", "Robustness curves")
    app.select_slider(key="robust_curve_n").set_value(100).run()
    app.button(key="robust_curve_run").click().run()
    assert_clean(app)
    task = task_runner().wait(app.session_state["robust_curve"]["task"], timeout=120)
    assert task.status == "done"
    curve = next(iter(task.result.values()))
    assert curve.accuracy[0] >= curve.accuracy[-1]  # accuracy falls as ε grows
    app.run()
    assert any("Accuracy under PGD" in str(c.proto.spec) for c in app.get("plotly_chart"))
    open_tab(app, "robust_tab", "Corruptions")
    app.button(key="robust_corrupt_run").click().run()
    table = task_runner().wait(app.session_state["robust_corrupt"]["task"], timeout=120)
    assert table.status == "done"
    app.run()
    assert_clean(app)
    table = next(d.value for d in app.dataframe if "noise" in d.value.index)  # rendered inside the polling fragment
    assert list(table.index)[:2] == ["noise", "blur"] and list(table.columns) == [1, 2, 3, 4, 5]


def test_privacy_tab_shows_what_privacy_cost(app, tmp_path):
    store, ids = finished_runs(tmp_path / "home", n=1)
    cfg = TrainConfig(model="seed-cnn", dataset="digits", epochs=2, batch_size=64, dp=True, target_epsilon=8.0,
                      optimizer="sgd", lr=0.5)
    private = execute_run(store, create_run(store, cfg, name="private run").id)
    assert private.status == "completed" and private.metrics["epsilon"] <= 8.0 + 1e-6
    app.run()
    app.selectbox(key="app_dataset").set_value("digits").run()
    goto(app, "robustness")
    open_tab(app, "robust_tab", "Privacy")
    assert_clean(app)
    assert any("privacy costs" in m.value and "private run" in m.value for m in app.markdown)
    goto(app, "train")  # the latest run is the private one: the ε it spent is on the Train page
    assert any(f"privacy spent ε = **{private.metrics['epsilon']:.2f}**" in m.value for m in app.markdown)

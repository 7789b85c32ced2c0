"""Drawing sets: save, correct, export and import (hostile files refused whole), score, thresholds, retrain, CLI."""
from __future__ import annotations

import io
import json
import struct
import threading
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.cli import main
from core.data.drawing_files import export_bytes, export_set, import_bytes, import_path, suggested_name
from core.data.drawing_parts import as_splits, images, part_ids, split_ids
from core.data.drawing_sets import DrawingStore, Verdict
from core.data.drawings import class_drawing_set
from core.data.preprocess import decode_upload, to_model_input
from core.errors import ConfigError, DrawingSetError
from core.inference.drawing_scores import (lowest_threshold, score_all, score_model, score_predictions,
                                           threshold_curve)
from core.inference.metrics import reject_curve
from core.training.config import SETTINGS, TrainConfig, plan
from core.training.experiment import create_run, execute_run
from core.training.retrain import retrain_config


def _fill(sets: DrawingStore, name: str, n: int, seed: int = 0, verdicts: bool = False) -> str:
    """A set of `n` generated class drawings (digits interleaved), some with a verdict and a drawer's name."""
    s = sets.create_set(name)
    canvases, labels = class_drawing_set(n, seed)
    for i, (canvas, label) in enumerate(zip(canvases, labels)):
        verdict = Verdict("starter", int((label + i % 2) % 10), 0.5 + 0.04 * (i % 10)) if verdicts else None
        sets.add(s.id, to_model_input(canvas), canvas, label=int(label), drawer=f"visitor-{i % 3}",
                 drawer_name=f"Pupil {i % 3}" if i % 2 else None, verdict=verdict)
    return s.id


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


def _on_paper(canvas: np.ndarray) -> np.ndarray:
    """An RGBA canvas's strokes in dark blue ink on white paper: what a scan or a photo of the drawing would hold."""
    alpha = canvas[..., 3:].astype(np.float32) / 255
    return np.round(255 * (1 - alpha) + np.array([20, 30, 90]) * alpha).astype(np.uint8)


def _image_folder_files(n: int = 20) -> dict[str, bytes]:
    canvases, labels = class_drawing_set(n, seed=5)
    return {f"{label}/d{i:02d}.{'png' if i % 2 else 'jpg'}": _png(_on_paper(c), "PNG" if i % 2 else "JPEG")
            for i, (c, label) in enumerate(zip(canvases, labels))}


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


# -- the store ------------------------------------------------------------------------------------------
def test_save_list_relabel_export_import_round_trip_is_bit_equal(store, tmp_path):
    sets = DrawingStore(store.root)
    set_id = _fill(sets, "Class 3B", 20, verdicts=True)
    assert [(s.name, s.count) for s in sets.list_sets()] == [("Class 3B", 20)]
    assert sets.get_set(set_id).per_label == (2,) * 10

    threes = sets.drawings(set_id, label=3)
    assert len(threes) == 2 and all(d.label == 3 for d in threes)
    assert all(d.verdict.predicted == 4 for d in sets.drawings(set_id, predicted=4))
    sure = sets.drawings(set_id, min_confidence=0.7, max_confidence=0.8)
    assert sure and all(0.7 <= d.verdict.confidence <= 0.8 for d in sure)

    wrong = sets.drawings(set_id)[0]
    assert sets.relabel(wrong.id, 8).label == 8
    with pytest.raises(DrawingSetError, match="digit from 0 to 9"):
        sets.relabel(wrong.id, 12)
    sets.delete_drawing(sets.drawings(set_id)[-1].id)

    path = export_set(sets, set_id, tmp_path / "class3b.zip")
    result = import_path(sets, "Class 3B again", path)
    assert result.created and result.added == 19
    before, after = sets.drawings(set_id), sets.drawings(result.set.id)
    assert [d.model_input.tobytes() for d in before] == [d.model_input.tobytes() for d in after]
    assert [d.model_input.dtype for d in after] == [np.float32] * 19
    assert [d.label for d in before] == [d.label for d in after] and after[0].label == 8
    assert [(d.drawer, d.drawer_name, d.verdict, d.created) for d in before] == \
           [(d.drawer, d.drawer_name, d.verdict, d.created) for d in after]
    assert [sets.canvas_png(d.id) for d in before] == [sets.canvas_png(d.id) for d in after]
    assert sets.rename_set(result.set.id, "Class 3C").name == "Class 3C"
    sets.delete_set(result.set.id)
    assert [s.name for s in sets.list_sets()] == ["Class 3B"]


def test_an_exported_sets_suggested_name_is_its_own_or_numbered_and_nothing_for_other_files(store):
    sets = DrawingStore(store.root)
    set_id = _fill(sets, "Class 3B", 3)
    data = export_bytes(sets, set_id)
    assert suggested_name(sets, data) == "Class 3B – copy"  # taken here: importing into it would add to it
    import_bytes(sets, "Class 3B – copy", data)
    assert suggested_name(sets, data) == "Class 3B – copy 2"
    assert suggested_name(DrawingStore(store.root / "elsewhere"), data) == "Class 3B"
    assert suggested_name(sets, b"not a zip") is None


def test_set_names_are_checked_and_never_become_paths(store):
    sets = DrawingStore(store.root)
    for bad, message in (("", "needs a name"), ("  ", "needs a name"), ("x" * 81, "at most 80"),
                         ("two\nlines", "control characters")):
        with pytest.raises(DrawingSetError, match=message):
            sets.create_set(bad)
    odd = sets.create_set("../../etc/passwd")
    assert sets.resolve("../../etc/passwd").id == odd.id
    with pytest.raises(DrawingSetError, match="already exists"):
        sets.create_set("../../etc/passwd")
    assert sorted(p.name for p in store.root.iterdir()) == sorted(
        p.name for p in store.root.iterdir() if p.name.startswith(("drawings.sqlite", "index.sqlite", "runs")))


def test_drawings_saved_from_several_threads_all_arrive(store):
    sets = DrawingStore(store.root)
    s = sets.create_set("busy class")
    x = np.zeros((28, 28), np.float32)
    x[10:18, 12:16] = 1.0

    def save(k):
        for i in range(10):
            sets.add(s.id, x, label=(k + i) % 10, drawer=f"visitor-{k}")

    threads = [threading.Thread(target=save, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sets.get_set(s.id).count == 40


# -- hostile imports -------------------------------------------------------------------------------------
def _declared_huge(files: dict[str, bytes]) -> bytes:
    """A zip whose first entry's central-directory header declares 300 MB uncompressed."""
    data = bytearray(_zip(files))
    at = data.index(b"PK\x01\x02")
    data[at + 24:at + 28] = struct.pack("<I", 300 * 2**20)
    return bytes(data)


@pytest.mark.parametrize("case, bad_name", [
    ("traversal", "../x.png"),
    ("absolute", "/tmp/x.png"),
    ("not an image", "3/notes.png"),
    ("wrong type", "3/readme.txt"),
    ("label folder 12", "12/a.png"),
    ("declared 300 MB", None),
])
def test_a_hostile_image_folder_zip_is_refused_whole(store, case, bad_name):
    sets = DrawingStore(store.root)
    files = _image_folder_files(10)
    good = files["1/d01.png"]
    if case == "declared 300 MB":
        data = _declared_huge(files)
    else:
        data = _zip({**files, bad_name: b"this is not a picture" if case in ("not an image", "wrong type") else good})
    existing = _fill(sets, "Class 3B", 10)
    for target in ("Class 3B", "brand new set"):
        with pytest.raises(DrawingSetError) as refused:
            import_bytes(sets, target, data, "upload.zip")
        text = str(refused.value)
        assert text.startswith("Import refused:") and text.endswith("Nothing was imported.")
        assert (bad_name or "300 MB") in text
    assert sets.get_set(existing).count == 10 and sets.find("brand new set") is None


def test_a_tampered_exported_set_is_refused_whole(store):
    sets = DrawingStore(store.root)
    set_id = _fill(sets, "Class 3B", 10)
    with zipfile.ZipFile(io.BytesIO(export_bytes(sets, set_id))) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    for change, message in (
            (lambda f: f.update({"drawings.csv": f["drawings.csv"].replace(b"images/000004.png,3", b"images/000004.png,12")}),
             "drawings.csv row 5 has label '12'"),
            (lambda f: f.update({"images/000002.png": b"not a png"}), "images/000002.png"),
            (lambda f: f.update({"inputs.f32": f["inputs.f32"][:-4] + struct.pack("<f", 7.0)}), "row 11"),
            (lambda f: f.update({"extra.py": b"print('hi')"}), "extra.py is not part of an exported drawing set")):
        tampered = dict(files)
        change(tampered)
        with pytest.raises(DrawingSetError, match="Import refused") as refused:
            import_bytes(sets, "copy", _zip(tampered))
        assert message in str(refused.value)
    assert sets.find("copy") is None and sets.get_set(set_id).count == 10


def test_image_folder_import_runs_every_file_through_the_upload_preprocessing(store, tmp_path):
    sets = DrawingStore(store.root)
    files = _image_folder_files(20)
    for name, data in files.items():
        (tmp_path / "class" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "class" / name).write_bytes(data)
    (tmp_path / "class" / ".DS_Store").write_bytes(b"\0junk")  # desktop litter is skipped, not refused
    result = import_path(sets, "from a folder", tmp_path / "class")
    assert result.added == 20
    stored = {d.source: d for d in sets.drawings(result.set.id)}
    for name, data in files.items():
        expected = to_model_input(decode_upload(data))
        assert stored[name].model_input.tobytes() == expected.tobytes() and stored[name].label == int(name[0])
    # the same folder zipped (with its top folder, as zip tools do) reads the same
    zipped = import_bytes(sets, "from a zip", _zip({f"class/{k}": v for k, v in files.items()}), "class.zip")
    assert [d.model_input.tobytes() for d in sets.drawings(zipped.set.id)] == \
           [stored[name].model_input.tobytes() for name in sorted(files)]


def test_an_image_folder_with_a_blank_image_is_refused_whole(store, tmp_path):
    sets = DrawingStore(store.root)
    files = {**_image_folder_files(10), "7/blank.png": _png(np.full((50, 50, 3), 255, np.uint8))}
    for name, data in files.items():
        (tmp_path / "class" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "class" / name).write_bytes(data)
    with pytest.raises(DrawingSetError, match="7/blank.png: The picture shows no digit"):
        import_path(sets, "with a blank", tmp_path / "class")
    assert sets.list_sets() == []


# -- a set as a dataset ----------------------------------------------------------------------------------
def test_split_is_stratified_deterministic_and_the_same_after_export(store):
    sets = DrawingStore(store.root)
    set_id = _fill(sets, "Class 3B", 41)
    train, held = part_ids(sets, set_id, "train"), part_ids(sets, set_id, "heldout")
    assert not set(train) & set(held) and sorted(train + held) == part_ids(sets, set_id)
    assert part_ids(sets, set_id, "train") == train  # deterministic
    labels = {d.id: d.label for d in sets.drawings(set_id)}
    for digit in range(10):
        n_train = sum(labels[i] == digit for i in train)
        n_held = sum(labels[i] == digit for i in held)
        assert n_train - n_held in (0, 1)  # stratified: each digit split in half (the odd one trains)
    copy = import_bytes(sets, "copy", export_bytes(sets, set_id)).set.id
    inputs = {d.id: d.model_input.tobytes() for d in sets.drawings(set_id)}
    copied = {d.id: d.model_input.tobytes() for d in sets.drawings(copy)}
    assert sorted(copied[i] for i in part_ids(sets, copy, "heldout")) == sorted(inputs[i] for i in held)


def test_copies_of_one_drawing_stay_on_one_side_of_the_split(store):
    # A tester imported a set into itself: every held-out drawing was a copy of a train drawing, and the "never
    # trained on" figure was measured on what the model trained on
    sets = DrawingStore(store.root)
    set_id = _fill(sets, "Class 3B", 20)
    before = (part_ids(sets, set_id, "train"), part_ids(sets, set_id, "heldout"))
    import_bytes(sets, set_id, export_bytes(sets, set_id))  # into itself
    assert len(part_ids(sets, set_id)) == 40
    image = {d.id: d.model_input.tobytes() for d in sets.drawings(set_id)}
    train, held = part_ids(sets, set_id, "train"), part_ids(sets, set_id, "heldout")
    assert not {image[i] for i in train} & {image[i] for i in held}
    assert set(before[0]) <= set(train) and set(before[1]) <= set(held)  # the originals keep their sides
    assert split_ids([(1, 3, "a"), (2, 3, "b"), (3, 5, "a")]) == ([1, 3], [2]) or \
        split_ids([(1, 3, "a"), (2, 3, "b"), (3, 5, "a")]) == ([2], [1, 3])  # a relabelled copy goes with the first


def test_a_set_is_a_uint8_dataset_like_a_test_split(store):
    sets = DrawingStore(store.root)
    set_id = _fill(sets, "Class 3B", 12)
    data = images(sets, set_id)
    assert data.x.dtype.is_floating_point is False and data.x.shape == (12, 28, 28)
    assert np.array_equal(data.x.numpy(), np.round(data.inputs * 255).astype(np.uint8))
    splits = as_splits(sets, set_id)
    assert splits.sizes() == {"train": 0, "val": 0, "test": 12} and splits.test_y.tolist() == data.y.tolist()


# -- scores and thresholds -------------------------------------------------------------------------------
def test_scores_equal_scikit_learn_on_the_same_predictions(store):
    from sklearn.metrics import accuracy_score, confusion_matrix, recall_score

    sets = DrawingStore(store.root)
    set_id = _fill(sets, "Class 3B", 30)
    score = score_model(store, sets, set_id, "starter")
    y, p = score.labels, score.predictions
    assert score.n == 30 and score.accuracy == pytest.approx(accuracy_score(y, p))
    assert score.recall == pytest.approx(recall_score(y, p, labels=list(range(10)), average=None, zero_division=0))
    assert np.array_equal(score.confusion, confusion_matrix(y, p, labels=list(range(10))))
    assert score.mistakes == np.flatnonzero(p != y).tolist()
    rows = score_all(store, sets, set_id)
    assert rows == [{"key": "starter", "name": score.name, "model": "resnet", "accuracy": score.accuracy, "n": 30,
                     "mistakes": len(score.mistakes), "error": None}]
    # random predictions with classes missing from the labels, too
    rng = np.random.default_rng(0)
    labels, probs = rng.integers(0, 7, 50), rng.dirichlet(np.ones(10), 50)
    figures = score_predictions(probs, labels)
    assert figures["recall"] == pytest.approx(recall_score(labels, probs.argmax(1), labels=list(range(10)),
                                                           average=None, zero_division=0))
    assert np.array_equal(figures["confusion"], confusion_matrix(labels, probs.argmax(1), labels=list(range(10))))


def _probs(confidences, predicted):
    """Probabilities whose top class is `predicted` with the given confidence (the rest spread evenly)."""
    out = np.empty((len(confidences), 10))
    for row, (c, k) in zip(out, zip(confidences, predicted)):
        row[:] = (1 - c) / 9
        row[k] = c
    return out


def test_lowest_threshold_that_keeps_the_accuracy_on_hand_made_probabilities():
    labels = np.array([0, 1, 2, 3, 4, 5])
    right_or_wrong = [0, 1, 9, 3, 9, 5]  # the third and fifth are wrong
    probs = _probs([0.99, 0.95, 0.9, 0.8, 0.6, 0.5], right_or_wrong)
    strict = lowest_threshold(probs, labels, 1.0)
    assert (strict.threshold, strict.accuracy, strict.coverage) == (pytest.approx(0.95), 1.0, pytest.approx(2 / 6))
    three_in_four = lowest_threshold(probs, labels, 0.75)
    assert (three_in_four.threshold, three_in_four.coverage) == (pytest.approx(0.8), pytest.approx(4 / 6))
    lenient = lowest_threshold(probs, labels, 0.6)
    assert lenient.threshold == 0.0 and lenient.coverage == 1.0 and "no threshold is needed" in lenient.message
    hopeless = lowest_threshold(_probs([0.9, 0.8], [1, 0]), np.array([0, 1]), 0.99)
    assert hopeless.threshold is None and hopeless.message.startswith("No confidence threshold reaches 99.0%")
    assert threshold_curve(probs, labels) == reject_curve(probs, labels)


# -- retraining ------------------------------------------------------------------------------------------
def test_drawing_settings_are_validated_and_counted_in_the_plan(store):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(dataset="digits", drawings="x", drawings_factor=0)
    assert caught.value.field == "drawings_factor" and str(caught.value).startswith(SETTINGS["drawings_factor"].label)
    with pytest.raises(ConfigError, match="holds digits"):
        TrainConfig(dataset="fashion-mnist", drawings="x")
    with pytest.raises(DrawingSetError, match="No drawing set"):
        create_run(store, TrainConfig(dataset="digits", drawings="nowhere"))
    sets = DrawingStore(store.root)
    set_id = _fill(sets, "Class 3B", 20)
    run = plan(TrainConfig(dataset="digits", drawings="Class 3B", drawings_factor=5, batch_size=10),
               {"train": 100, "val": 10, "test": 10})
    assert run.train_images == 100 + 10 * 5
    assert create_run(store, TrainConfig(dataset="digits", drawings="Class 3B")).config["drawings"] == set_id


def test_finetuning_on_a_set_raises_accuracy_on_its_held_out_half(store, tiny_cfg, digits):
    base = create_run(store, tiny_cfg)  # a weak seed CNN: 16 steps on scikit-learn's digits
    assert execute_run(store, base.id).status == "completed"
    sets = DrawingStore(store.root)
    set_id = _fill(sets, "Class 3B", 120)
    cfg = retrain_config(store, base.id, "Class 3B", factor=10, lr=2e-3, batch_size=64, max_steps=40, epochs=2)
    assert (cfg.init_from, cfg.drawings, cfg.augment, cfg.dataset) == (base.id, set_id, True, "digits")
    record = execute_run(store, create_run(store, cfg).id)
    assert record.status == "completed", record.message
    m = record.metrics
    assert m["drawings_train"] == 60 and m["drawings_heldout"] == 60
    assert record.dataset_sizes["train"] == len(digits.train_y) + 60 * 10 and record.dataset_sizes["drawings"] == 60
    assert m["drawings_accuracy"] >= m["drawings_accuracy_before"] + 0.3, m  # measured: 28% -> 88%
    control = execute_run(store, create_run(store, cfg.replace(drawings=None)).id)  # the same steps without the set
    assert m["drawings_accuracy"] >= score_model(store, sets, set_id, control.id, part="heldout").accuracy + 0.1
    assert m["test_accuracy_before"] == store.get(base.id).metrics["test_accuracy"]
    held = score_model(store, sets, set_id, record.id, part="heldout")
    assert held.accuracy == pytest.approx(m["drawings_accuracy"])


# -- command line ----------------------------------------------------------------------------------------
def test_cli_lists_imports_exports_and_evaluates_on_a_set(store, tmp_path, capsys):
    files = _image_folder_files(20)
    for name, data in files.items():
        (tmp_path / "class" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "class" / name).write_bytes(data)
    assert main(["drawings", "import", "Class 3B", str(tmp_path / "class"), "--json"]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert imported["created"] and imported["added"] == 20
    assert main(["drawings", "list", "--json"]) == 0
    assert [(s["name"], s["count"]) for s in json.loads(capsys.readouterr().out)] == [("Class 3B", 20)]
    assert main(["drawings", "export", imported["set_id"], str(tmp_path / "out.zip")]) == 0
    assert "Exported 20 drawings" in capsys.readouterr().out
    assert main(["drawings", "import", "Class 3B", str(tmp_path / "out.zip")]) == 0  # into the existing set
    assert "40 in all" in capsys.readouterr().out
    assert main(["eval", "starter", "--drawings", "Class 3B", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 40 and 0 <= result["accuracy"] <= 1 and result["run_id"] == "starter"
    (tmp_path / "class" / "12").mkdir()
    (tmp_path / "class" / "12" / "a.png").write_bytes(files["1/d01.png"])
    assert main(["drawings", "import", "Class 3B", str(tmp_path / "class")]) == 2
    assert "error: Import refused: 12/a.png is in the folder '12'" in capsys.readouterr().err
    assert main(["eval", "starter", "--drawings", "no such set"]) == 2
    assert "No drawing set is called 'no such set'" in capsys.readouterr().err

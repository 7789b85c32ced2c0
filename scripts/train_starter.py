"""Train the starter model shipped in core/assets/ (the one Draw & predict uses on first launch).

    python scripts/train_starter.py            # ~6 min on 2 CPU cores; needs MNIST under $DIGIT_LAB_DATA
Writes starter.safetensors, its sidecar starter.json (sha256, metrics) and STARTER_MODEL_CARD.md.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.insight.compare import model_card  # noqa: E402
from core.training.config import TrainConfig  # noqa: E402
from core.data.drawings import drawing_set  # noqa: E402
from core.training.experiment import create_run, execute_run  # noqa: E402
from core.inference.predict import ASSETS, STARTER_CARD, STARTER_WEIGHTS, Predictor  # noqa: E402
from core.runs import RunStore  # noqa: E402
from core.storage import atomic_write_bytes, atomic_write_json, sha256_file  # noqa: E402

DRAWINGS_PER_DIGIT = 100  # the synthetic "drawn by a person" set: 1,000 canvases, seed 0


def main() -> int:
    with tempfile.TemporaryDirectory() as home:
        store = RunStore(home)
        cfg = TrainConfig.from_preset("starter")
        record = execute_run(store, create_run(store, cfg, name="Starter model").id,
                             on_event=lambda e: e["type"] == "epoch" and print(
                                 f"epoch {e['epoch']}: val accuracy {e['val_accuracy']:.2%}", flush=True))
        if record.status != "completed":
            print(f"training ended {record.status}: {record.message}", file=sys.stderr)
            return 1
        ASSETS.mkdir(exist_ok=True)
        shutil.copyfile(store.weights_path(record.id), STARTER_WEIGHTS)
        canvases, labels = drawing_set(DRAWINGS_PER_DIGIT, seed=0)
        predictions = Predictor.load(STARTER_WEIGHTS).predict_batch(canvases)
        drawn = sum(p.label == y for p, y in zip(predictions, labels)) / len(labels)
        record.metrics["drawings_accuracy"] = drawn
        atomic_write_json(STARTER_CARD, {
            "name": "Starter model", "model": cfg.model, "dataset": cfg.dataset, "sha256": sha256_file(STARTER_WEIGHTS),
            "config": cfg.to_dict(), "metrics": record.metrics, "timings": record.timings,
            "drawings": {"images": len(labels), "seed": 0, "accuracy": drawn}, "versions": record.versions,
        })
        atomic_write_bytes(ASSETS / "STARTER_MODEL_CARD.md", model_card(record, store.read_metrics(record.id), STARTER_WEIGHTS.name).encode())
        print(json.dumps({"test_accuracy": record.metrics["test_accuracy"], "drawings_accuracy": drawn,
                          "train_seconds": record.timings["train_seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The run store: one folder per run (weights, metadata, metrics) plus an SQLite index to list them.

`store = RunStore()` (root from $DIGIT_LAB_HOME); `store.create(cfg)` makes a queued run,
`store.update(run_id, status=...)` rewrites its metadata atomically, `store.list()` reads the index.
`meta.json` is the truth and is written last; the index can always be rebuilt from the folders.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import sys
import threading
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DigitLabError, RunNotFoundError
from core.ownership import Lease, train_lock
from core.storage import append_line, atomic_write_bytes, atomic_write_json

STATUSES = ("queued", "running", "completed", "cancelled", "diverged", "failed", "interrupted")
RESUMABLE = ("cancelled", "interrupted", "failed")
ACTIVE = ("queued", "running")


STEP_POINTS = 100  # step points of the loss curve an epoch's metrics row keeps (about: the last is always kept)
RUN_STEP_POINTS = 2_000  # and a run's rows together, so a 300-epoch run's metrics stay small to read every few seconds


def thinned(points: list, most: int) -> list:
    """At most about `most` of `points`, evenly spaced, always with the last."""
    if len(points) <= most:
        return list(points)
    every = -(-len(points) // most)
    return points[::every] + ([points[-1]] if (len(points) - 1) % every else [])


def stored_steps(rows: list[dict[str, Any]], unfinished: list | None = None) -> list[tuple[int, float, float]]:
    """The (step, loss, lr) points kept in a run's epoch rows (RunStore.append_metrics), in order, then those of
    the epoch it left `unfinished` (RunRecord.unfinished_steps); none for a run recorded before rows kept them."""
    return [tuple(p) for row in rows for p in row.get("steps", [])] + [tuple(p) for p in unfinished or []]


def home() -> Path:
    """The run store's root: $DIGIT_LAB_HOME, else ~/.digit-lab."""
    return Path(os.environ.get("DIGIT_LAB_HOME") or Path.home() / ".digit-lab").expanduser()


@dataclass
class RunRecord:
    """A run's metadata, as stored in its `meta.json`."""

    id: str
    name: str
    status: str
    config: dict[str, Any]
    created: float
    updated: float
    params: int = 0
    flops: int = 0
    dataset_sizes: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # final: test_accuracy, test_loss, val_*
    timings: dict[str, float] = field(default_factory=dict)  # train_seconds, images_per_second
    weights_sha256: str | None = None
    message: str = ""
    owner_pid: int | None = None  # the owner lease (see core.ownership): the process that queued or trains the run,
    owner_start: int | None = None  # its start time (clock ticks after boot), so a reused pid is not taken for it,
    owner_boot: str | None = None  # and the boot it ran in
    parent: str | None = None  # run this one was resumed or fine-tuned from
    versions: dict[str, str] = field(default_factory=dict)
    # [step, loss, lr] of an epoch the run left unfinished (stopped, diverged or failed mid-epoch), as an epoch's
    # metrics row keeps them; a resume re-runs that epoch and clears them
    unfinished_steps: list[list[float]] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.config.get("model", "")

    @property
    def dataset(self) -> str:
        return self.config.get("dataset", "")

    @property
    def test_accuracy(self) -> float | None:
        return self.metrics.get("test_accuracy")

    @property
    def owner(self) -> Lease | None:
        """The lease of the process that queued or trains this run; None when nobody holds it."""
        return Lease(self.owner_pid, self.owner_start, self.owner_boot) if self.owner_pid is not None else None

    def held_elsewhere(self) -> Lease | None:
        """The lease of another live process that has this run queued or training, if any."""
        owner = self.owner
        if self.status in ACTIVE and owner is not None and owner != Lease.mine() and owner.alive():
            return owner
        return None

    def check_free(self) -> None:
        """Refuse, with a sentence, a run that another live process has queued or is training."""
        owner = self.held_elsewhere()
        if owner is not None:
            raise DigitLabError(f"Run {self.id} is {self.status} in another process (pid {owner.pid}); stop it "
                                "there or wait for it to finish.")


class RunStore:
    """Runs under one root folder; safe to share between threads of one server."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else home()
        self.runs_dir = self.root / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.root / "index.sqlite"
        self._lock = threading.RLock()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("""CREATE TABLE IF NOT EXISTS runs (
                id TEXT PRIMARY KEY, name TEXT, status TEXT, model TEXT, dataset TEXT,
                created REAL, updated REAL, test_accuracy REAL, params INTEGER, flops INTEGER,
                train_seconds REAL, meta TEXT)""")

    # -- records -------------------------------------------------------------------------------
    def create(self, config: dict[str, Any], *, name: str | None = None, params: int = 0, flops: int = 0,
               parent: str | None = None) -> RunRecord:
        """A new queued run with its folder and metadata, owned by this process until it runs or ends."""
        now = time.time()
        run_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + "-" + secrets.token_hex(3)
        record = RunRecord(id=run_id, name=name or f"{config['model']} on {config['dataset']}",
                           status="queued", config=config, created=now, updated=now, params=params,
                           flops=flops, parent=parent, versions=_versions(), **_owner_fields(Lease.mine()))
        self.folder(run_id).mkdir(parents=True)
        self._write(record)
        return record

    def get(self, run_id: str) -> RunRecord:
        path = self.folder(run_id) / "meta.json"
        if not _valid_id(run_id) or not path.is_file():
            raise RunNotFoundError(f"No run {run_id!r} in {self.root}.")
        return RunRecord(**json.loads(path.read_text()))

    def update(self, run_id: str, **changes: Any) -> RunRecord:
        """Change fields of a run's metadata (read-modify-write under the store's lock).

        `owner=Lease.mine()` makes this process the run's owner, `owner=None` releases it.
        """
        if "owner" in changes:
            changes.update(_owner_fields(changes.pop("owner")))
        with self._lock:
            record = self.get(run_id)
            for key, value in changes.items():
                if not hasattr(record, key):
                    raise AttributeError(f"RunRecord has no field {key!r}")
                setattr(record, key, value)
            record.updated = time.time()
            self._write(record)
            return record

    def rename(self, run_id: str, name: str) -> RunRecord:
        name = name.strip()
        if not name:
            raise ValueError("A run's name cannot be empty.")
        return self.update(run_id, name=name[:120])

    def delete(self, run_id: str) -> None:
        """Remove a run's folder and index row; a run queued or training in a live process cannot be deleted."""
        record = self.get(run_id)
        if record.status in ACTIVE and _owned(record):
            raise ValueError(f"Run {record.name} is {record.status}; stop it before deleting.")
        with self._lock, self._db() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(self.folder(run_id), ignore_errors=True)

    def list(self, *, status: str | None = None, model: str | None = None, dataset: str | None = None,
             order_by: str = "created", descending: bool = True) -> list[RunRecord]:
        """Runs from the index, optionally filtered, newest first by default."""
        columns = {"created", "updated", "name", "status", "model", "dataset", "test_accuracy", "params",
                   "flops", "train_seconds"}
        if order_by not in columns:
            raise ValueError(f"Cannot sort runs by {order_by!r}.")
        where, args = [], []
        for column, value in (("status", status), ("model", model), ("dataset", dataset)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT meta FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += f" ORDER BY {order_by} {'DESC' if descending else 'ASC'}"
        with self._db() as db:
            return [RunRecord(**json.loads(row[0])) for row in db.execute(sql, args)]

    def resolve(self, key: str) -> RunRecord:
        """A run by id, unique id prefix or exact name (the CLI's RUN argument)."""
        if _valid_id(key) and (self.folder(key) / "meta.json").is_file():
            return self.get(key)
        matches = [r for r in self.list() if r.id.startswith(key) or r.name == key]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunNotFoundError(f"No run matches {key!r} in {self.root}.")
        raise RunNotFoundError(f"{key!r} matches {len(matches)} runs; give more of the id.")

    # -- files -------------------------------------------------------------------------------------
    def folder(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def weights_path(self, run_id: str) -> Path:
        return self.folder(run_id) / "weights.safetensors"

    def append_metrics(self, run_id: str, row: dict[str, Any]) -> None:
        """One epoch's row: its figures and, under "steps", about STEP_POINTS of its steps as [step, loss, lr] (the
        loss curve a reload draws)."""
        append_line(self.folder(run_id) / "metrics.jsonl", json.dumps(row))

    def read_metrics(self, run_id: str) -> list[dict[str, Any]]:
        path = self.folder(run_id) / "metrics.jsonl"
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line after a crash is skipped, not fatal
                continue
        return rows

    def truncate_metrics(self, run_id: str, epochs: int) -> None:
        """Keep only the first `epochs` rows (a resumed run re-runs the epochs after its checkpoint)."""
        rows = [r for r in self.read_metrics(run_id) if r.get("epoch", 0) <= epochs]
        atomic_write_bytes(self.folder(run_id) / "metrics.jsonl",
                           "".join(json.dumps(r) + "\n" for r in rows).encode())

    # -- recovery ----------------------------------------------------------------------------------
    def recover_interrupted(self, live_run_ids: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Mark runs left 'running'/'queued' by a process that has died as 'interrupted'; returns their ids.

        A run's owner lease decides (pid, start time, boot), so a pid reused after a restart does not keep a run
        alive; runs of live processes, this one included, are left alone.
        """
        found = []
        for record in [r for status in ACTIVE for r in self.list(status=status)]:
            if record.id not in live_run_ids and not _owned(record) and self._mark_interrupted(record.id):
                found.append(record.id)
        return found

    def _mark_interrupted(self, run_id: str) -> bool:
        """Mark one run whose owner died 'interrupted', checked again under its folder's lock (which every process
        that queues or trains a run holds while it changes the run), so a run just taken over is left alone."""
        try:
            with train_lock(self.folder(run_id), run_id), self._lock:
                if _owned(record := self.get(run_id)) or record.status not in ACTIVE:
                    return False
                self.update(run_id, status="interrupted", owner=None,
                            message="The process training this run stopped before it finished; resume it "
                                    "from its last completed epoch.")
                return True
        except (DigitLabError, OSError):  # being trained right now, or deleted meanwhile
            return False

    def reindex(self) -> int:
        """Rebuild the SQLite index from the run folders; returns how many runs it holds."""
        with self._lock, self._db() as db:
            db.execute("DELETE FROM runs")
        count = 0
        for meta in sorted(self.runs_dir.glob("*/meta.json")):
            try:
                self._index(RunRecord(**json.loads(meta.read_text())))
                count += 1
            except (json.JSONDecodeError, TypeError):
                continue
        return count

    # -- internals ---------------------------------------------------------------------------------
    def _write(self, record: RunRecord) -> None:
        with self._lock:
            atomic_write_json(self.folder(record.id) / "meta.json", asdict(record))
            self._index(record)

    def _index(self, record: RunRecord) -> None:
        with self._lock, self._db() as db:
            db.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (
                record.id, record.name, record.status, record.model, record.dataset, record.created,
                record.updated, record.metrics.get("test_accuracy"), record.params, record.flops,
                record.timings.get("train_seconds"), json.dumps(asdict(record))))

    def _db(self) -> "closing[sqlite3.Connection]":
        """`with self._db() as db:` yields an autocommit connection and closes it afterwards."""
        return closing(sqlite3.connect(self.index_path, timeout=30, isolation_level=None))


def _valid_id(run_id: str) -> bool:
    return bool(run_id) and all(c.isalnum() or c == "-" for c in run_id)


def _owned(record: RunRecord) -> bool:
    """Whether a live process (this one included) holds the run's lease."""
    return record.owner is not None and record.owner.alive()


def _owner_fields(lease: Lease | None) -> dict[str, Any]:
    return {"owner_pid": lease.pid if lease else None, "owner_start": lease.start if lease else None,
            "owner_boot": lease.boot if lease else None}


def _versions() -> dict[str, str]:
    from importlib.metadata import version  # not `import torchvision`: that costs ~3 s, for a version string

    import torch

    from core import __version__

    return {"digit_lab": __version__, "torch": torch.__version__, "torchvision": version("torchvision"),
            "python": sys.version.split()[0]}

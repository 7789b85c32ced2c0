"""Labelled drawing sets ("Class 3B", "my digits") kept in the run store, with each drawing's exact model input.

`sets = DrawingStore(store.root)`; `s = sets.create_set("Class 3B")`; `sets.add(s.id, model_input, canvas, label=3,
drawer=session_id)`; core.data.drawing_parts gives a set (or its train or held-out half) as tensors to train or
evaluate on, and core.data.drawing_files imports and exports a set as one file. Rows live in `<root>/drawings.sqlite` (WAL): the model input as zlib'd
float32 bytes (bit-exact), the canvas as PNG bytes. A set's name is text people type: it never becomes a path.
"""
from __future__ import annotations

import hashlib
import io
import math
import secrets
import sqlite3
import threading
import time
import zlib
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from core.errors import DrawingSetError

DB_NAME = "drawings.sqlite"
MAX_NAME = 80  # characters in a set's name (and a drawer's free-text name)
MAX_DRAWER = 200  # characters in a visitor / session id
MAX_SET_DRAWINGS = 20_000  # drawings in one set: as many as one import may bring
SIZE = 28
INPUT_BYTES = SIZE * SIZE * 4  # one float32 model input


@dataclass(frozen=True)
class DrawingSet:
    id: str  # "ds-" + 8 hex digits; what configs and URLs hold
    name: str
    created: float  # unix seconds
    owner: str | None  # the visitor who created it, when a shared server records one
    count: int  # drawings in it
    per_label: tuple[int, ...]  # drawings per label 0..9


@dataclass(frozen=True)
class Verdict:
    """What a model said about a drawing when it was saved."""

    model_key: str  # run id or "starter"
    predicted: int  # 0..9
    confidence: float  # 0..1


@dataclass(frozen=True)
class Drawing:
    id: int
    set_id: str
    label: int  # the true digit, 0..9
    drawer: str  # visitor / session id ("" when unknown)
    drawer_name: str | None  # optional free text
    created: float  # unix seconds
    verdict: Verdict | None
    source: str  # where it came from: "canvas", or the imported file's name
    digest: str  # sha256 of the model input's float32 bytes
    model_input: np.ndarray  # float32 (28, 28) in [0, 1], bit-equal to what was saved


@dataclass(frozen=True)
class NewDrawing:
    """A drawing checked and encoded, ready to insert (see `prepare`)."""

    label: int
    input_blob: bytes
    digest: str
    canvas_png: bytes
    drawer: str
    drawer_name: str | None
    created: float
    verdict: Verdict | None
    source: str


def check_name(name: Any) -> str:
    """A set's name, stripped; refused with a sentence when empty, too long or holding control characters."""
    if not isinstance(name, str) or not name.strip():
        raise DrawingSetError("A drawing set needs a name.")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise DrawingSetError(f"A drawing set's name can have at most {MAX_NAME} characters (this one has {len(name)}).")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise DrawingSetError("A drawing set's name cannot contain line breaks, tabs or other control characters.")
    return name


def check_label(label: Any, what: str = "The label") -> int:
    """A digit 0..9 as an int, or a sentence."""
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)) or not 0 <= int(label) <= 9:
        raise DrawingSetError(f"{what} must be a digit from 0 to 9 (got {label!r}).")
    return int(label)


def encode_input(model_input: Any) -> tuple[bytes, str]:
    """A 28×28 model input as zlib'd little-endian float32 bytes and their sha256; refuses anything else."""
    arr = np.asarray(model_input)
    if arr.shape != (SIZE, SIZE) or arr.dtype.kind not in "fiu":
        raise DrawingSetError(f"A model input must be a 28×28 array of numbers (got shape {arr.shape}, {arr.dtype}).")
    arr = np.ascontiguousarray(arr, dtype="<f4")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise DrawingSetError("A model input's pixels must be finite numbers from 0 to 1.")
    raw = arr.tobytes()
    return zlib.compress(raw, 6), hashlib.sha256(raw).hexdigest()


def decode_input(blob: bytes) -> np.ndarray:
    raw = zlib.decompressobj().decompress(blob, INPUT_BYTES + 1)
    if len(raw) != INPUT_BYTES:
        raise DrawingSetError("A stored model input is damaged (wrong size).")
    return np.frombuffer(raw, dtype="<f4").reshape(SIZE, SIZE).astype(np.float32)


def canvas_png(canvas: Any, model_input: np.ndarray | None = None) -> bytes:
    """PNG bytes of a canvas (RGBA/RGB/grey array, PIL image, or PNG bytes, checked); without one, the model input
    drawn as a 28×28 grey picture."""
    if canvas is None:
        if model_input is None:
            raise DrawingSetError("A drawing needs a canvas or a model input to picture it.")
        canvas = np.round(np.asarray(model_input, dtype=np.float32) * 255).astype(np.uint8)
    if isinstance(canvas, (bytes, bytearray)):
        data = bytes(canvas)
        try:
            with Image.open(io.BytesIO(data)) as probe:
                if probe.format != "PNG":
                    raise DrawingSetError(f"A canvas must be PNG bytes (got {probe.format}).")
                probe.verify()
        except DrawingSetError:
            raise
        except Exception as error:  # noqa: BLE001 - any decoder failure is "not a PNG"
            raise DrawingSetError(f"A canvas must be PNG bytes; these could not be read ({error}).") from None
        return data
    image = canvas if isinstance(canvas, Image.Image) else Image.fromarray(np.ascontiguousarray(canvas))
    if image.mode not in {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}:
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def prepare(model_input: Any, canvas: Any = None, *, label: Any, drawer: str = "", drawer_name: str | None = None,
            verdict: Verdict | None = None, source: str = "canvas", created: float | None = None) -> NewDrawing:
    """Check and encode one drawing; every problem is a DrawingSetError sentence."""
    label = check_label(label)
    blob, digest = encode_input(model_input)
    drawer = "" if drawer is None else str(drawer)
    if len(drawer) > MAX_DRAWER:
        raise DrawingSetError(f"A drawer's id can have at most {MAX_DRAWER} characters.")
    if drawer_name is not None:
        drawer_name = str(drawer_name).strip() or None
        if drawer_name and len(drawer_name) > MAX_NAME:
            raise DrawingSetError(f"A drawer's name can have at most {MAX_NAME} characters.")
    if verdict is not None:
        check_label(verdict.predicted, "The predicted label")
        if not (isinstance(verdict.confidence, (int, float)) and 0 <= verdict.confidence <= 1):
            raise DrawingSetError(f"A confidence must be a number from 0 to 1 (got {verdict.confidence!r}).")
        verdict = Verdict(str(verdict.model_key)[:MAX_DRAWER], int(verdict.predicted), float(verdict.confidence))
    if created is not None and not (isinstance(created, (int, float)) and math.isfinite(created)):
        raise DrawingSetError(f"A drawing's time must be a number of seconds (got {created!r}).")
    arr = np.asarray(model_input, dtype=np.float32)
    return NewDrawing(label, blob, digest, canvas_png(canvas, arr), drawer, drawer_name,
                      time.time() if created is None else float(created), verdict, str(source)[:500])


class DrawingStore:
    """Drawing sets under a run store's root (default $DIGIT_LAB_HOME); safe to share between threads."""

    def __init__(self, root: Path | str | None = None) -> None:
        from core.runs import home

        self.root = Path(root) if root is not None else home()
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / DB_NAME
        self._lock = threading.RLock()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("""CREATE TABLE IF NOT EXISTS sets (
                id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, owner TEXT, created REAL NOT NULL)""")
            db.execute("""CREATE TABLE IF NOT EXISTS drawings (
                id INTEGER PRIMARY KEY AUTOINCREMENT, set_id TEXT NOT NULL,
                label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9), drawer TEXT NOT NULL, drawer_name TEXT,
                created REAL NOT NULL, model_key TEXT, predicted INTEGER, confidence REAL, source TEXT NOT NULL,
                digest TEXT NOT NULL, input BLOB NOT NULL, canvas BLOB NOT NULL)""")
            db.execute("CREATE INDEX IF NOT EXISTS drawings_set ON drawings (set_id, id)")

    # -- sets ------------------------------------------------------------------------------------
    def create_set(self, name: str, owner: str | None = None) -> DrawingSet:
        """A new empty set; a name already taken is refused with a sentence."""
        with self._write() as db:
            set_id = self._insert_set(db, check_name(name), owner)
        return self.get_set(set_id)

    def list_sets(self) -> list[DrawingSet]:
        """Every set with its counts, by name."""
        with self._db() as db:  # one query: Draw & predict lists the sets on every stroke
            rows = db.execute("SELECT id, name, created, owner FROM sets ORDER BY name COLLATE NOCASE, created").fetchall()
            counts: dict[str, dict[int, int]] = {}
            for set_id, label, n in db.execute("SELECT set_id, label, COUNT(*) FROM drawings GROUP BY set_id, label"):
                counts.setdefault(set_id, {})[label] = n
        return [self._described(row, counts.get(row[0], {})) for row in rows]

    def get_set(self, set_id: str) -> DrawingSet:
        with self._db() as db:
            row = db.execute("SELECT id, name, created, owner FROM sets WHERE id = ?", (set_id,)).fetchone()
            if row is None:
                raise DrawingSetError(f"No drawing set with id {set_id!r}.")
            counts = dict(db.execute("SELECT label, COUNT(*) FROM drawings WHERE set_id = ? GROUP BY label",
                                     (set_id,)).fetchall())
        return self._described(row, counts)

    @staticmethod
    def _described(row: tuple, counts: dict[int, int]) -> DrawingSet:
        """A set from its row (id, name, created, owner) and its drawings per label."""
        per_label = tuple(int(counts.get(d, 0)) for d in range(10))
        return DrawingSet(row[0], row[1], row[2], row[3], sum(per_label), per_label)

    def resolve(self, key: str) -> DrawingSet:
        """A set by id or exact name (the CLI's SET argument)."""
        with self._db() as db:
            row = db.execute("SELECT id FROM sets WHERE id = ? OR name = ? ORDER BY id = ? DESC",
                             (key, str(key).strip(), key)).fetchone()
        if row is None:
            names = ", ".join(s.name for s in self.list_sets()[:10]) or "none yet"
            raise DrawingSetError(f"No drawing set is called {key!r} (sets: {names}).")
        return self.get_set(row[0])

    def find(self, key: str) -> DrawingSet | None:
        """Like `resolve`, but None when there is no such set."""
        try:
            return self.resolve(key)
        except DrawingSetError:
            return None

    def rename_set(self, set_id: str, name: str) -> DrawingSet:
        name = check_name(name)
        with self._write() as db:
            self._check_free_name(db, name, set_id)
            if db.execute("UPDATE sets SET name = ? WHERE id = ?", (name, set_id)).rowcount == 0:
                raise DrawingSetError(f"No drawing set with id {set_id!r}.")
        return self.get_set(set_id)

    def delete_set(self, set_id: str) -> None:
        """Remove a set and all its drawings."""
        with self._write() as db:
            db.execute("DELETE FROM drawings WHERE set_id = ?", (set_id,))
            if db.execute("DELETE FROM sets WHERE id = ?", (set_id,)).rowcount == 0:
                raise DrawingSetError(f"No drawing set with id {set_id!r}.")

    # -- drawings --------------------------------------------------------------------------------
    def add(self, set_id: str, model_input: Any, canvas: Any = None, *, label: int, drawer: str = "",
            drawer_name: str | None = None, verdict: Verdict | None = None, source: str = "canvas",
            created: float | None = None) -> Drawing:
        """Save one drawing: its exact model input, its canvas (PNG), the true label, who drew it, the model's verdict."""
        item = prepare(model_input, canvas, label=label, drawer=drawer, drawer_name=drawer_name, verdict=verdict,
                       source=source, created=created)
        return self.get(self.add_many(set_id, [item])[0])

    def add_many(self, set_key: str, items: Sequence[NewDrawing], *, create: bool = False,
                 owner: str | None = None) -> list[int]:
        """Insert prepared drawings in one transaction: all or none. With `create`, a set named `set_key` that does
        not exist is created in the same transaction (so a refused import leaves no empty set behind)."""
        with self._write() as db:
            row = db.execute("SELECT id FROM sets WHERE id = ? OR name = ? ORDER BY id = ? DESC",
                             (set_key, str(set_key).strip(), set_key)).fetchone()
            if row is None and not create:
                raise DrawingSetError(f"No drawing set is called {set_key!r}.")
            set_id = row[0] if row is not None else self._insert_set(db, check_name(set_key), owner)
            have = db.execute("SELECT COUNT(*) FROM drawings WHERE set_id = ?", (set_id,)).fetchone()[0]
            if have + len(items) > MAX_SET_DRAWINGS:
                raise DrawingSetError(f"A drawing set holds at most {MAX_SET_DRAWINGS:,} drawings; this one has "
                                      f"{have:,} and {len(items):,} more would not fit.")
            ids = []
            for it in items:
                v = it.verdict
                cur = db.execute(
                    "INSERT INTO drawings (set_id, label, drawer, drawer_name, created, model_key, predicted, "
                    "confidence, source, digest, input, canvas) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (set_id, it.label, it.drawer, it.drawer_name, it.created, v.model_key if v else None,
                     v.predicted if v else None, v.confidence if v else None, it.source, it.digest,
                     it.input_blob, it.canvas_png))
                ids.append(int(cur.lastrowid))
        return ids

    def get(self, drawing_id: int) -> Drawing:
        with self._db() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM drawings WHERE id = ?", (int(drawing_id),)).fetchone()
        if row is None:
            raise DrawingSetError(f"No drawing with id {drawing_id}.")
        return _drawing(row)

    def drawings(self, set_id: str, *, label: int | None = None, predicted: int | None = None,
                 min_confidence: float | None = None, max_confidence: float | None = None,
                 drawer: str | None = None) -> list[Drawing]:
        """A set's drawings in the order they were saved, optionally only those with a label, a predicted label,
        a confidence in [min_confidence, max_confidence] (drawings saved without a verdict then drop out), or a drawer."""
        self.get_set(set_id)
        where, args = ["set_id = ?"], [set_id]
        for column, value in (("label", label), ("predicted", predicted), ("drawer", drawer)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if min_confidence is not None:
            where.append("confidence >= ?")
            args.append(float(min_confidence))
        if max_confidence is not None:
            where.append("confidence <= ?")
            args.append(float(max_confidence))
        with self._db() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM drawings WHERE {' AND '.join(where)} ORDER BY id", args)
            return [_drawing(r) for r in rows.fetchall()]

    def canvas_png(self, drawing_id: int) -> bytes:
        """The drawing's canvas as PNG bytes."""
        with self._db() as db:
            row = db.execute("SELECT canvas FROM drawings WHERE id = ?", (int(drawing_id),)).fetchone()
        if row is None:
            raise DrawingSetError(f"No drawing with id {drawing_id}.")
        return bytes(row[0])

    def relabel(self, drawing_id: int, label: int) -> Drawing:
        """Correct a drawing's true label."""
        label = check_label(label)
        with self._write() as db:
            if db.execute("UPDATE drawings SET label = ? WHERE id = ?", (label, int(drawing_id))).rowcount == 0:
                raise DrawingSetError(f"No drawing with id {drawing_id}.")
        return self.get(drawing_id)

    def delete_drawing(self, drawing_id: int) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM drawings WHERE id = ?", (int(drawing_id),)).rowcount == 0:
                raise DrawingSetError(f"No drawing with id {drawing_id}.")

    def labels_and_digests(self, set_id: str) -> list[tuple[int, int, str]]:
        """(id, label, digest) of every drawing, in order: all a split needs, without the images."""
        with self._db() as db:
            return [(int(a), int(b), c) for a, b, c in
                    db.execute("SELECT id, label, digest FROM drawings WHERE set_id = ? ORDER BY id", (set_id,))]

    # -- internals -------------------------------------------------------------------------------
    def _insert_set(self, db: sqlite3.Connection, name: str, owner: str | None) -> str:
        self._check_free_name(db, name)
        set_id = "ds-" + secrets.token_hex(4)
        db.execute("INSERT INTO sets (id, name, owner, created) VALUES (?,?,?,?)",
                   (set_id, name, None if owner is None else str(owner)[:MAX_DRAWER], time.time()))
        return set_id

    @staticmethod
    def _check_free_name(db: sqlite3.Connection, name: str, set_id: str | None = None) -> None:
        row = db.execute("SELECT id FROM sets WHERE name = ?", (name,)).fetchone()
        if row is not None and row[0] != set_id:
            raise DrawingSetError(f"A drawing set called {name!r} already exists; choose another name.")

    def _db(self) -> "closing[sqlite3.Connection]":
        """`with self._db() as db:` yields an autocommit connection and closes it afterwards."""
        return closing(sqlite3.connect(self.path, timeout=30, isolation_level=None))

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE): committed when the block ends, rolled back if it raises."""
        with self._lock, self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")


_COLUMNS = ("id, set_id, label, drawer, drawer_name, created, model_key, predicted, confidence, source, digest, "
            "input")


def _drawing(row: tuple) -> Drawing:
    (drawing_id, set_id, label, drawer, drawer_name, created, model_key, predicted, confidence, source, digest,
     blob) = row
    verdict = Verdict(model_key, int(predicted), float(confidence)) if model_key is not None else None
    return Drawing(int(drawing_id), set_id, int(label), drawer, drawer_name, float(created), verdict, source, digest,
                   decode_input(blob))

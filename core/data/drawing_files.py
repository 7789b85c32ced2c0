"""A drawing set as one file, and drawings from files: export to a zip, import a zip or an ImageFolder, all or nothing.

`export_set(sets, set_id, "class3b.zip")` writes the canvases as PNGs, a CSV of labels and drawers and the exact
model inputs (`inputs.f32`, raw little-endian float32), so `import_path(sets, "Class 3B", "class3b.zip")` restores
them bit for bit. `import_path` also reads a folder (or a zip) laid out like torchvision's ImageFolder: `0/` ... `9/`
holding PNG or JPEG files, each preprocessed as an upload. Input is treated as hostile: sizes, counts, paths, types
and labels are checked, and any problem refuses the whole import with a sentence naming the file.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from core.data.drawing_sets import (INPUT_BYTES, MAX_SET_DRAWINGS, SIZE, DrawingSet, DrawingStore, NewDrawing,
                                    Verdict, check_name, prepare)
from core.data.preprocess import decode_upload, to_model_input
from core.errors import DigitLabError, DrawingSetError
from core.storage import atomic_write_bytes

FORMAT = "digit-lab-drawing-set"
FORMAT_VERSION = 1
MAX_FILES = MAX_SET_DRAWINGS  # entries in one zip / files in one folder (a set's PNGs plus three more in an export)
MAX_TOTAL_BYTES = 200 * 1024 * 1024  # uncompressed bytes of one import, declared and read
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # one image file, as the dashboard's upload cap
MAX_META_BYTES = 16 * 1024 * 1024  # set.json and drawings.csv
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CSV_COLUMNS = ("file", "label", "drawer", "drawer_name", "created", "model_key", "predicted", "confidence", "source",
               "digest")
LABEL_FOLDERS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class ImportResult:
    set: DrawingSet  # the set after the import
    added: int  # drawings added
    created: bool  # whether the import created the set


# -- export ------------------------------------------------------------------------------------------
def export_bytes(sets: DrawingStore, set_id: str) -> bytes:
    """A set as zip bytes: set.json, drawings.csv, images/000001.png ..., inputs.f32 (N×28×28 float32, CSV order)."""
    info = sets.get_set(set_id)
    drawings = sets.drawings(set_id)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, d in enumerate(drawings, start=1):
            name = f"images/{i:06d}.png"
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), sets.canvas_png(d.id), zipfile.ZIP_STORED)
            v = d.verdict
            writer.writerow([name, d.label, d.drawer, d.drawer_name or "", repr(d.created), v.model_key if v else "",
                             v.predicted if v else "", repr(v.confidence) if v else "", d.source, d.digest])
        inputs = np.stack([d.model_input for d in drawings]) if drawings else np.empty((0, SIZE, SIZE), np.float32)
        zf.writestr("inputs.f32", np.ascontiguousarray(inputs, dtype="<f4").tobytes())
        zf.writestr("drawings.csv", table.getvalue())
        zf.writestr("set.json", json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "name": info.name,
                                            "drawings": len(drawings)}, indent=2))
    return out.getvalue()


def export_set(sets: DrawingStore, set_id: str, path: Path | str) -> Path:
    """Write a set's zip to `path` atomically; returns the path."""
    path = Path(path)
    atomic_write_bytes(path, export_bytes(sets, set_id))
    return path


# -- import ------------------------------------------------------------------------------------------
def import_path(sets: DrawingStore, target: str, path: Path | str, *, drawer: str = "import",
                owner: str | None = None) -> ImportResult:
    """Add the drawings of an exported set's zip, an ImageFolder zip or an ImageFolder folder to set `target` (an id
    or a name; a new name creates the set). All or nothing: a refused import leaves the store as it was."""
    path = Path(path)
    if path.is_dir():
        items = read_image_folder(path, drawer=drawer)
    elif path.is_file():
        if path.stat().st_size > MAX_TOTAL_BYTES:
            raise _refuse(path.name, f"is larger than {MAX_TOTAL_BYTES // 2**20} MB.")
        with open(path, "rb") as f:
            items = read_zip(f, path.name, drawer=drawer)
    else:
        raise DrawingSetError(f"There is no file or folder at {path}.")
    return _store(sets, target, items, path.name, owner)


def import_bytes(sets: DrawingStore, target: str, data: bytes, filename: str = "upload.zip", *,
                 drawer: str = "import", owner: str | None = None) -> ImportResult:
    """`import_path` for a zip uploaded as bytes."""
    if len(data) > MAX_TOTAL_BYTES:
        raise _refuse(filename, f"is larger than {MAX_TOTAL_BYTES // 2**20} MB.")
    return _store(sets, target, read_zip(io.BytesIO(data), filename, drawer=drawer), filename, owner)


def suggested_name(sets: DrawingStore, data: bytes) -> str | None:
    """A new set's name for an exported set's zip: the name it was exported under, a copy's if a set here has it
    already (importing into that name would add to that set). None for anything else: an image folder, a bad zip."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            info = zf.getinfo("set.json")
            meta = json.loads(_read(zf, info, "set.json", 64 * 1024).decode("utf-8"))
    except (KeyError, OSError, ValueError, zipfile.BadZipFile, DigitLabError):  # not ours: no suggestion, no error
        return None
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name.strip():
        return None
    name = name.strip()[:70]
    # "Class 3B – copy", not "Class 3B (2)": the set box shows a set's count in brackets after its name
    return next(n for n in (name, f"{name} – copy", *(f"{name} – copy {i}" for i in range(2, 10_000)))
                if sets.find(n) is None)


def _store(sets: DrawingStore, target: str, items: list[NewDrawing], where: str, owner: str | None) -> ImportResult:
    if not items:
        raise _refuse(where, "holds no drawings.")
    existing = sets.find(target)
    if existing is None:
        check_name(target)
    sets.add_many(existing.id if existing else target, items, create=existing is None, owner=owner)
    final = sets.get_set(existing.id) if existing else sets.resolve(target)
    return ImportResult(final, len(items), existing is None)


def read_zip(source: IO[bytes], where: str, *, drawer: str = "import") -> list[NewDrawing]:
    """Checked, prepared drawings from an exported set's zip (it has drawings.csv) or an ImageFolder zip."""
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise _refuse(where, f"is not a zip file or a folder ({error}).") from None
    with zf:
        entries = _checked_entries(zf, where)
        names = {info.filename for info in entries}
        if "drawings.csv" in names:
            return _read_export(zf, entries, where)
        return _read_image_folder_zip(zf, entries, where, drawer)


def read_image_folder(root: Path, *, drawer: str = "import") -> list[NewDrawing]:
    """Checked, prepared drawings from a folder holding 0/ ... 9/ subfolders of PNG or JPEG files."""
    root = Path(root)
    found, total = [], 0
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            full = Path(folder) / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                raise _refuse(rel, "is a symbolic link; only plain files are read.")
            if _junk(rel) or name in dirs:
                continue
            if not stat.S_ISREG(full.stat().st_mode):
                raise _refuse(rel, "is not a plain file.")
            label = _image_folder_label(rel.split("/"), rel)
            size = full.stat().st_size
            if size > MAX_IMAGE_BYTES:
                raise _refuse(rel, f"is larger than {MAX_IMAGE_BYTES // 2**20} MB.")
            total += size
            found.append((rel, label, full))
            if len(found) > MAX_FILES or total > MAX_TOTAL_BYTES:
                raise _refuse(root.name, f"holds more than {MAX_FILES:,} files or {MAX_TOTAL_BYTES // 2**20} MB.")
        dirs[:] = [d for d in dirs if not _junk(d)]
    return [_upload_drawing(rel, label, path.read_bytes(), drawer) for rel, label, path in found]


# -- the two zip layouts -------------------------------------------------------------------------------
def _read_export(zf: zipfile.ZipFile, entries: list[zipfile.ZipInfo], where: str) -> list[NewDrawing]:
    by_name = {info.filename: info for info in entries}
    for name in by_name:
        if name not in ("set.json", "drawings.csv", "inputs.f32") and not re.fullmatch(r"images/[\w.-]+\.png", name):
            raise _refuse(f"{where}/{name}", "is not part of an exported drawing set (set.json, drawings.csv, "
                                             "inputs.f32 and images/*.png).")
    for needed in ("set.json", "inputs.f32"):
        if needed not in by_name:
            raise _refuse(where, f"has drawings.csv but no {needed}, so it is not a complete exported drawing set.")
    try:
        meta = json.loads(_read(zf, by_name["set.json"], where, MAX_META_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _refuse(f"{where}/set.json", f"is not valid JSON ({error}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise _refuse(f"{where}/set.json", f"does not describe a {FORMAT} of version {FORMAT_VERSION}.")
    try:
        text = _read(zf, by_name["drawings.csv"], where, MAX_META_BYTES).decode("utf-8")
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except (UnicodeDecodeError, csv.Error) as error:
        raise _refuse(f"{where}/drawings.csv", f"is not a readable UTF-8 CSV ({error}).") from None
    if rows and set(CSV_COLUMNS) - set(rows[0]):
        raise _refuse(f"{where}/drawings.csv", f"lacks the columns {', '.join(sorted(set(CSV_COLUMNS) - set(rows[0])))}.")
    raw = _read(zf, by_name["inputs.f32"], where, MAX_FILES * INPUT_BYTES)
    if len(raw) != len(rows) * INPUT_BYTES:
        raise _refuse(f"{where}/inputs.f32", f"holds {len(raw) / INPUT_BYTES:g} model inputs for {len(rows)} rows "
                                             "of drawings.csv.")
    inputs = np.frombuffer(raw, dtype="<f4").reshape(-1, SIZE, SIZE)
    items, seen = [], set()
    for i, row in enumerate(rows):
        at = f"{where}/drawings.csv row {i + 2}"
        name = row.get("file") or ""
        if name not in by_name or not name.startswith("images/") or name in seen:
            raise _refuse(at, f"names the image {name!r}, which is missing from the zip or used twice.")
        seen.add(name)
        x = inputs[i]
        if row.get("digest") and hashlib.sha256(x.tobytes()).hexdigest() != row["digest"]:
            raise _refuse(at, "does not match its model input in inputs.f32 (the digest differs).")
        png = _read(zf, by_name[name], where, MAX_IMAGE_BYTES)
        try:
            kind = decode_upload(png).format
        except DigitLabError as error:
            raise _refuse(f"{where}/{name}", str(error)) from None
        if kind != "PNG":
            raise _refuse(f"{where}/{name}", f"is a {kind} image, not a PNG.")
        label, verdict = _int(row.get("label"), at, "label"), _verdict(row, at)
        try:
            items.append(prepare(x, png, label=label, drawer=row.get("drawer") or "", verdict=verdict,
                                 drawer_name=row.get("drawer_name") or None, source=row.get("source") or name,
                                 created=_float(row.get("created"), at, "created")))
        except DigitLabError as error:
            raise _refuse(at, str(error)) from None
    unused = sorted(n for n in by_name if n.startswith("images/") and n not in seen)
    if unused:
        raise _refuse(f"{where}/{unused[0]}", "is not listed in drawings.csv.")
    return items


def _read_image_folder_zip(zf: zipfile.ZipFile, entries: list[zipfile.ZipInfo], where: str,
                           drawer: str) -> list[NewDrawing]:
    files = sorted((info for info in entries if not _junk(info.filename)), key=lambda info: info.filename)
    parts = [info.filename.split("/") for info in files]
    tops = {p[0] for p in parts}
    strip = len(tops) == 1 and all(len(p) == 3 for p in parts) and next(iter(tops)) not in LABEL_FOLDERS
    checked = []
    for info, p in zip(files, parts):
        label = _image_folder_label(p[1:] if strip else p, f"{where}/{info.filename}")
        checked.append((info, label))
    return [_upload_drawing(f"{where}/{info.filename}", label, _read(zf, info, where, MAX_IMAGE_BYTES), drawer)
            for info, label in checked]


# -- checks ------------------------------------------------------------------------------------------
def _checked_entries(zf: zipfile.ZipFile, where: str) -> list[zipfile.ZipInfo]:
    """The zip's file entries (folders dropped) after checking names, kinds, count and declared total size."""
    infos = zf.infolist()
    if len(infos) > MAX_FILES + 3:
        raise _refuse(where, f"holds {len(infos):,} entries; at most {MAX_FILES:,} drawings are imported at once.")
    total = 0
    for info in infos:
        name = info.filename
        at = f"{where}/{name}"
        if "\\" in name or "\x00" in name or name.startswith("/") or re.match(r"[A-Za-z]:", name):
            raise _refuse(at, "has an absolute or Windows-style path; entries must be relative.")
        if any(part in ("..", ".") for part in name.rstrip("/").split("/")) or "//" in name:
            raise _refuse(at, "points outside the archive's folder (a '..' or empty path part).")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise _refuse(at, "is a symbolic link; only plain files are read.")
        if info.flag_bits & 0x1:
            raise _refuse(at, "is encrypted.")
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise _refuse(where, f"declares {total / 2**20:,.0f} MB uncompressed; the limit is "
                             f"{MAX_TOTAL_BYTES // 2**20} MB.")
    return [info for info in infos if not info.is_dir()]


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, limit: int) -> bytes:
    """An entry's bytes, refused if it declares more than `limit` or its data does not match what it declares."""
    at = f"{where}/{info.filename}"
    if info.file_size > limit:
        raise _refuse(at, f"is larger than {limit / 2**20:g} MB.")
    try:
        with zf.open(info) as f:
            data = f.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError, ValueError) as error:
        raise _refuse(at, f"could not be read from the zip ({error}).") from None
    if len(data) != info.file_size:
        raise _refuse(at, "holds a different amount of data than it declares.")
    return data


def _image_folder_label(parts: list[str], at: str) -> int:
    if len(parts) != 2:
        raise _refuse(at, "is not inside a label folder: expected 0/ ... 9/ holding PNG or JPEG files.")
    folder, name = parts
    if folder not in LABEL_FOLDERS:
        raise _refuse(at, f"is in the folder {folder!r}; label folders are named 0 to 9.")
    if not name.lower().endswith(IMAGE_SUFFIXES):
        raise _refuse(at, "is not a PNG or JPEG file (.png, .jpg, .jpeg).")
    return int(folder)


def _upload_drawing(at: str, label: int, data: bytes, drawer: str) -> NewDrawing:
    """One image file preprocessed exactly as an upload on the Draw & predict page."""
    try:
        image = decode_upload(data)
        return prepare(to_model_input(image), image, label=label, drawer=drawer, source=at)
    except DigitLabError as error:
        raise _refuse(at, str(error)) from None


def _junk(name: str) -> bool:
    """Files a zip tool or a desktop adds on its own (.DS_Store, __MACOSX/, hidden files): skipped, not refused."""
    parts = name.rstrip("/").split("/")
    return parts[0] == "__MACOSX" or any(p.startswith(".") and p not in (".", "..") for p in parts)


def _verdict(row: dict[str, str], at: str) -> Verdict | None:
    if not (row.get("model_key") or row.get("predicted") or row.get("confidence")):
        return None
    return Verdict(row.get("model_key") or "", _int(row.get("predicted"), at, "predicted"),
                   _float(row.get("confidence"), at, "confidence"))


def _int(text: str | None, at: str, column: str) -> int:
    if text is None or not re.fullmatch(r"\d", text.strip()):
        raise _refuse(at, f"has {column} {text!r}; it must be a digit from 0 to 9.")
    return int(text)


def _float(text: str | None, at: str, column: str) -> float:
    try:
        value = float(text or "")
    except ValueError:
        raise _refuse(at, f"has {column} {text!r}, which is not a number.") from None
    if not math.isfinite(value):
        raise _refuse(at, f"has {column} {text!r}, which is not a finite number.")
    return value


def _refuse(where: str, problem: str) -> DrawingSetError:
    """The one sentence of a refused import: what, where, and that nothing changed. `problem` is either a predicate
    ("is not a PNG ...") or another error's own sentence."""
    joint = " " if problem[:1].islower() else ": "
    return DrawingSetError(f"Import refused: {where}{joint}{problem} Nothing was imported.")


"""Atomic file writes and the Digit Lab weights format (safetensors + a format tag), read defensively.

`atomic_write_bytes(path, data)` never leaves a half-written file; `save_tensors` / `load_tensors`
write and read safetensors tagged as ours, and `load_tensors` refuses anything else with a message.
Nothing here unpickles: safetensors holds raw tensors and a JSON header only.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from core.errors import CheckpointError

FORMAT = "digit-lab"
FORMAT_VERSION = "1"
MAX_WEIGHTS_BYTES = 200 * 1024 * 1024  # refuse absurd files before reading them


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder, fsync, then `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are ordinary, readable data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def append_line(path: Path, line: str) -> None:
    """Append one line and fsync (append-only logs such as per-epoch metrics)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """Write tensors as tagged safetensors, atomically; returns the file's sha256."""
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    data = safetensors_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=header)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(path: Path, expected_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of one of our safetensors files; anything else is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No weights file at {path}.")
    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"{path.name} is {size / 1e6:.0f} MB, larger than any Digit Lab model; refused.")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise CheckpointError(f"{path.name} does not match the checksum recorded when it was saved: "
                              f"the file was changed or damaged, so it is not loaded.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path.name} is a safetensors file but not a Digit Lab one "
                                      f"(no '{FORMAT}' format tag).")
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except CheckpointError:
        raise
    except Exception as error:  # safetensors raises its own error types for malformed headers
        raise CheckpointError(f"{path.name} is not a Digit Lab weights file (expected safetensors; "
                              f"pickled .pt/.pth files are never loaded): {error}") from error
    return tensors, metadata

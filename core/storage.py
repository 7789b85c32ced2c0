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
DIGEST_KEY = "tensors_sha256"  # header field: digest of the tensors, checked on every load


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


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes: the file's integrity without a sidecar."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """Write tensors as tagged safetensors (with their own digest in the header), atomically; returns the file's sha256."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata, DIGEST_KEY: tensors_digest(tensors)}
    data = _metadata_sorted(safetensors_save(tensors, metadata=header))
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _metadata_sorted(data: bytes) -> bytes:
    """A safetensors file with its header's metadata in key order. safetensors writes the metadata in hash order, so
    the same tensors saved twice made two different files, each with its own sha256 (a starter measured again without
    training changed its weights file); sorted, a file depends on its content alone."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > size:  # the same content never grows; if it did, the file stays as safetensors wrote it
        return data
    return data[:8] + text.ljust(size) + data[8 + size:]  # padded with spaces to the same length, as safetensors pads


def read_header(path: Path) -> dict[str, str]:
    """The header metadata of one of our safetensors files, without reading its tensors."""
    _check_size(Path(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for malformed headers
        raise CheckpointError(_not_ours(Path(path), error)) from error
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{Path(path).name} is a safetensors file but not a Digit Lab one "
                              f"(no '{FORMAT}' format tag).")
    return metadata


def _check_size(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"No weights file at {path}.")
    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"{path.name} is {size / 1e6:.0f} MB, larger than any Digit Lab model; refused.")


def _not_ours(path: Path, error: Exception) -> str:
    return (f"{path.name} is not a Digit Lab weights file (expected safetensors; pickled .pt/.pth files are "
            f"never loaded): {error}")


def load_tensors(path: Path, expected_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata of one of our safetensors files; anything else is refused.

    Integrity is always checked: against `expected_sha256` (the file's checksum from a sidecar or run
    metadata) when given, and against the digest of the tensors in the file's own header; a file with
    neither cannot be verified and is refused.
    """
    path = Path(path)
    _check_size(path)
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise CheckpointError(f"{path.name} does not match the checksum recorded when it was saved: "
                              f"the file was changed or damaged, so it is not loaded.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path.name} is a safetensors file but not a Digit Lab one "
                                      f"(no '{FORMAT}' format tag).")
            # Copied out of the file's memory map: a file changed in place later (not by us: we write atomically)
            # must not pull the pages from under a loaded model, which would kill the process with SIGBUS.
            tensors = {key: f.get_tensor(key).clone() for key in f.keys()}
    except CheckpointError:
        raise
    except Exception as error:  # safetensors raises its own error types for malformed headers
        raise CheckpointError(_not_ours(path, error)) from error
    recorded = metadata.get(DIGEST_KEY)
    if recorded is None and expected_sha256 is None:
        raise CheckpointError(f"{path.name} carries no checksum and none was given (no sidecar), so its integrity "
                              "cannot be checked; it is not loaded.")
    if recorded is not None and tensors_digest(tensors) != recorded:
        raise CheckpointError(f"{path.name} does not match the digest stored in its header: the file was changed "
                              "or damaged, so it is not loaded.")
    return tensors, metadata

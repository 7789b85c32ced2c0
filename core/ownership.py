"""Who may write a run: an owner lease that survives process-id reuse, and the one-trainer lock on a run folder.

`Lease.mine()` is this process's lease; `lease.alive()` is true only while that very process runs (same boot,
same pid, same start time). `with train_lock(folder, run_id):` holds a run folder's exclusive lock or refuses.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from core.errors import DigitLabError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one trainer per run is then the user's care
    fcntl = None

LOCK_FILE = "train.lock"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class Lease:
    """A process's claim on a run: its id, its start time (clock ticks after boot) and the boot it started in.

    `start` and `boot` are None where /proc is missing (not Linux); the lease then rests on the pid alone.
    """

    pid: int
    start: int | None = None
    boot: str | None = None

    @classmethod
    def mine(cls) -> "Lease":
        """This process's lease."""
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> "Lease":
        """The lease of the running process `pid`."""
        return cls(pid, process_start(pid), boot_id())

    def alive(self) -> bool:
        """Whether the process that took this lease still runs; a reused pid or a reboot makes it dead."""
        if self.boot is not None and boot_id() not in (None, self.boot):
            return False
        if not _pid_running(self.pid):
            return False
        now = process_start(self.pid)
        return self.start is None or now is None or now == self.start


def boot_id() -> str | None:
    """The kernel's id of the current boot (Linux), None elsewhere."""
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def process_start(pid: int) -> int | None:
    """When process `pid` started, in clock ticks after boot (field 22 of /proc/PID/stat); None if unknown."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on: the command name before it may hold spaces and parentheses."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    fields = _stat_fields(pid)
    return not (fields and fields[0] in ("Z", "X"))  # a zombie has exited; only its parent has not reaped it


@contextmanager
def train_lock(folder: Path, run_id: str) -> Iterator[None]:
    """Hold the run folder's exclusive lock (`train.lock`, flock) for the block; refuse if another holds it.

    The lock belongs to an open file, so it is released when the block ends or the process dies however it dies.
    """
    if fcntl is None:
        yield
        return
    fd = os.open(Path(folder) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise DigitLabError(f"Run {run_id} is being trained by another process (pid {holder}); wait for it "
                                "to finish or stop it there.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # for the refusal's message only; the lock is the flock
        yield
    finally:
        os.close(fd)

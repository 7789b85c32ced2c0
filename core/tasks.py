"""Long computations other than training (robustness curves, corruption tables) run in the background.

`runner = TaskRunner()`; `task = runner.submit("PGD curve", lambda progress: work(progress=progress))`; a page
keeps `task.id` and reads `runner.get(task.id).snapshot()` on a timer. One worker thread per runner, so two
heavy tasks never fight for the same cores; the work reports `progress(done, total)` and never touches the UI.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from core.errors import DigitLabError

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass
class Task:
    """One background computation as pages see it."""

    id: str
    title: str
    status: str = "queued"  # queued | running | done | failed
    done: int = 0
    total: int = 0
    result: Any = None
    message: str = ""  # why it failed, as a sentence
    submitted: float = field(default_factory=time.time)
    finished: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"id": self.id, "title": self.title, "status": self.status, "done": self.done,
                    "total": self.total, "result": self.result, "message": self.message,
                    "seconds": (self.finished or time.time()) - self.submitted}

    def progress(self, done: int, total: int) -> None:
        with self.lock:
            self.done, self.total = done, total


class TaskRunner:
    """Runs submitted functions one at a time on a background thread; safe to share between sessions."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digit-lab-task")
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def submit(self, title: str, work: Callable[[Progress], Any]) -> Task:
        """Queue `work(progress)`; its return value becomes the task's result."""
        task = Task(id=f"task-{next(self._ids)}", title=title)
        with self._lock:
            self._tasks[task.id] = task
        self._pool.submit(self._run, task, work)
        return task

    def get(self, task_id: str | None) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id) if task_id else None

    def wait(self, task_id: str, timeout: float = 60.0) -> Task:
        """Block until the task has ended (tests and scripts; pages poll instead)."""
        deadline = time.time() + timeout
        task = self.get(task_id)
        while task is not None and task.status in ("queued", "running") and time.time() < deadline:
            time.sleep(0.05)
        if task is None or task.status in ("queued", "running"):
            raise TimeoutError(f"Task {task_id} did not finish within {timeout} s.")
        return task

    @staticmethod
    def _run(task: Task, work: Callable[[Progress], Any]) -> None:
        with task.lock:
            task.status = "running"
        try:
            result = work(task.progress)
        except Exception as error:  # noqa: BLE001 - a task's failure is shown on its page, never raised there
            if not isinstance(error, DigitLabError):
                log.exception("task %s failed", task.title)
            with task.lock:
                task.status, task.finished = "failed", time.time()
                task.message = str(error) if isinstance(error, DigitLabError) else f"{type(error).__name__}: {error}"
            return
        with task.lock:
            task.status, task.result, task.finished = "done", result, time.time()

"""Background training jobs: one worker per device, a queue behind it, progress pages can poll.

`jobs = JobManager(store)`; `job = jobs.submit(cfg)`; a page keeps `job.id` (the run id) and reads
`jobs.get(job.id).snapshot()` on a timer; `jobs.stop(job.id)` asks the loop to stop within a batch.
Workers never touch the UI: they only update a `Job`'s progress under its lock.

By default each device's jobs train in a child process (core.training.worker) that this process's worker thread
feeds and listens to, so page reruns never compete with the training loop for the interpreter and a crash in
training cannot take the server down; `DIGIT_LAB_WORKER=thread` (or `JobManager(store, worker="thread")`) trains in
a thread of this process instead, as tests that patch the engine need.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from core.training.config import TrainConfig
from core.errors import DigitLabError
from core.training.experiment import create_run, execute_run
from core.ownership import Lease, train_lock
from core.runs import RESUMABLE, RunStore, stored_steps
from core.training.devices import pick_device
from core.training.train import Event
from core.training.worker import TrainingProcess, WorkerDied

log = logging.getLogger(__name__)
MAX_STEP_POINTS = 2_000  # per job: older step losses are thinned so a long run stays cheap to plot
# The ETA follows the pace of the last ETA_WINDOW_S seconds, not the slow first steps (data loading, the first kernels),
# and waits for ETA_MIN_S and ETA_MIN_STEPS of it: averaged from the first step, a first run showed 1,373 s for 36 s
ETA_WINDOW_S = 10.0
ETA_MIN_S, ETA_MIN_STEPS = 2.0, 5
WORKER_MODES = ("process", "thread")


@dataclass
class Job:
    """One run's training as seen by pages; `snapshot()` is the only way to read it."""

    id: str  # the run id
    device: str
    resume: bool = False
    precision: str = ""  # what the run trains in (fp32 or bf16), known once it has started
    status: str = "queued"  # queued | running | completed | cancelled | diverged | failed
    message: str = ""
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    lr: float | None = None
    images_per_second: float | None = None
    steps: list[tuple[int, float, float]] = field(default_factory=list)  # (step, loss, lr)
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    preview: dict[str, list] = field(default_factory=dict)  # a few validation predictions
    test_accuracy: float | None = None
    phase: str = ""  # what the worker is doing beyond stepping, e.g. "testing on 10,000 images"
    stop_event: threading.Event = field(default_factory=threading.Event, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _pace: deque = field(default_factory=deque, repr=False)  # (time, step) of the steps in the last ETA_WINDOW_S

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the progress, safe to use after the lock is released."""
        with self.lock:
            eta = None
            if self._pace and self.status == "running":
                (t0, s0), (t1, s1) = self._pace[0], self._pace[-1]
                if t1 - t0 >= ETA_MIN_S and s1 - s0 >= ETA_MIN_STEPS:
                    eta = (self.total_steps - self.step) / ((s1 - s0) / (t1 - t0))
            return {
                "id": self.id, "device": self.device, "precision": self.precision, "status": self.status,
                "message": self.message,
                "submitted": self.submitted, "started": self.started, "finished": self.finished,
                "epoch": self.epoch, "epochs": self.epochs, "step": self.step, "total_steps": self.total_steps,
                "loss": self.loss, "lr": self.lr, "images_per_second": self.images_per_second, "eta_seconds": eta,
                "steps": list(self.steps), "history": [dict(r) for r in self.history], "preview": dict(self.preview),
                "test_accuracy": self.test_accuracy, "stop_requested": self.stop_event.is_set(), "phase": self.phase,
            }

    @property
    def done(self) -> bool:
        return self.status not in ("queued", "running")

    def on_event(self, event: Event) -> None:
        """Fold one training event into the progress (called from the worker thread)."""
        with self.lock:
            kind = event["type"]
            if kind == "started":
                self.status, self.started = "running", self.started or time.time()
                self.precision = event.get("precision", "")
                self.history = [r for r in self.history if r["epoch"] <= event["epoch"]]  # resume re-runs the rest
                self.epochs, self.total_steps, self.step = event["epochs"], event["total_steps"], event["step"]
            elif kind == "step":
                now = time.time()
                self._pace.append((now, event["step"]))
                while len(self._pace) > 2 and now - self._pace[1][0] >= ETA_WINDOW_S:
                    self._pace.popleft()
                self.step, self.epoch, self.loss, self.lr = event["step"], event["epoch"], event["loss"], event["lr"]
                self.images_per_second = event["images_per_second"]
                self.steps.append((event["step"], event["loss"], event["lr"]))
                if len(self.steps) > MAX_STEP_POINTS:
                    self.steps = self.steps[::2]
            elif kind == "epoch":
                self.history.append({k: v for k, v in event.items() if k not in ("type", "preview")})
                self.preview = event.get("preview", {})
                self.epoch = event["epoch"]
            elif kind == "testing":
                self.phase = f"testing on {event['images']:,} test images"
            elif kind == "finished":
                self.phase = ""
                self.status, self.message = event["status"], event["message"]
                self.test_accuracy, self.finished = event["test_accuracy"], time.time()


class JobManager:
    """Owns the workers for one run store; share one per process with `JobManager.shared()`."""

    _shared: dict[str, "JobManager"] = {}
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls, store: RunStore) -> "JobManager":
        """The process's manager for `store`'s folder: clearing a UI cache never orphans running jobs."""
        key = str(store.root.resolve())
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls(store)
            return cls._shared[key]

    def __init__(self, store: RunStore, worker: str | None = None) -> None:
        self.store = store
        self.worker = worker or os.environ.get("DIGIT_LAB_WORKER", "process")
        if self.worker not in WORKER_MODES:
            raise DigitLabError(f"DIGIT_LAB_WORKER must be one of {', '.join(WORKER_MODES)} (got {self.worker!r}).")
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, deque[Job]] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._processes: dict[str, TrainingProcess] = {}  # per device, in process mode
        store.recover_interrupted()  # runs left 'running' or 'queued' by a process that died are interrupted now

    def submit(self, cfg: TrainConfig, name: str | None = None, parent: str | None = None) -> Job:
        """Create a queued run for `cfg` (this process owns it) and schedule it on its device."""
        self.store.recover_interrupted()  # runs whose process died since this manager started become resumable
        device = pick_device(cfg.device).type
        record = create_run(self.store, cfg, name=name, parent=parent)
        return self._enqueue(Job(id=record.id, device=device, epochs=cfg.epochs))

    def run(self, run_id: str) -> Job:
        """Schedule a run created beforehand and still queued (e.g. one point of a transfer experiment)."""
        return self._schedule(run_id, resume=False)

    def resume(self, run_id: str) -> Job:
        """Continue a stopped or interrupted run from its last completed epoch."""
        return self._schedule(run_id, resume=True)

    def _schedule(self, run_id: str, *, resume: bool) -> Job:
        """Queue an existing run; one already queued or training here is returned as it is. The check and the
        enqueue happen under one lock, so two quick clicks queue a run once. This process becomes the run's owner;
        a run another live process has queued or is training is refused."""
        self.store.recover_interrupted()  # runs whose process died since this manager started become resumable
        cfg = TrainConfig.from_dict(self.store.get(run_id).config)
        allowed = RESUMABLE if resume else ("queued",)
        with self._lock:
            current = self._jobs.get(run_id)
            if current is not None and not current.done:
                return current
            with train_lock(self.store.folder(run_id), run_id):  # no other process starts training it meanwhile
                record = self.store.get(run_id)
                record.check_free()
                if record.status not in allowed:
                    raise DigitLabError(f"Run {run_id} is {record.status}; only {', '.join(allowed)} runs "
                                        f"{'resume' if resume else 'can be started'}.")
                self.store.update(run_id, status="queued", owner=Lease.mine())
            rows = self.store.read_metrics(run_id) if resume else []  # the curve so far, and the epochs'
            job = Job(id=run_id, device=pick_device(cfg.device).type, resume=resume, epochs=cfg.epochs,
                      steps=stored_steps(rows), history=[{k: v for k, v in r.items() if k != "steps"} for r in rows])
            self._enqueue_locked(job)
        return job

    def stop(self, job_id: str) -> None:
        """Ask a job to stop: a queued job is cancelled now, a running one within one batch."""
        job = self.get(job_id)
        if job is None:
            return
        job.stop_event.set()
        with self._lock:
            process = self._processes.get(job.device)
            if process is not None:
                process.stop(job.id)  # the child stops it within a batch (it ignores runs it does not hold)
            queue = self._queues.get(job.device)
            if queue is not None and job in queue:
                queue.remove(job)
                with job.lock:
                    job.status, job.message, job.finished = "cancelled", "Cancelled before it started.", time.time()
                self.store.update(job.id, status="cancelled", message=job.message, owner=None)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.submitted)

    def active(self) -> list[Job]:
        """Jobs queued or running, oldest first."""
        return [j for j in self.jobs() if not j.done]

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to run on its device, None when not queued."""
        with self._lock:
            for queue in self._queues.values():
                for i, job in enumerate(queue):
                    if job.id == job_id:
                        return i + 1
        return None

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job has finished (tests and scripts; pages poll instead)."""
        deadline = time.time() + timeout
        job = self.get(job_id)
        while job is not None and not job.done and time.time() < deadline:
            time.sleep(0.05)
        if job is None or not job.done:
            raise TimeoutError(f"Job {job_id} did not finish within {timeout} s.")
        return job

    # -- workers -----------------------------------------------------------------------------------
    def _enqueue(self, job: Job) -> Job:
        with self._lock:
            self._enqueue_locked(job)
        return job

    def _enqueue_locked(self, job: Job) -> None:
        """Add `job` to its device's queue and make sure a worker serves it (the caller holds the lock)."""
        self._jobs[job.id] = job
        self._queues.setdefault(job.device, deque()).append(job)
        worker = self._workers.get(job.device)
        if worker is None or not worker.is_alive():
            worker = threading.Thread(target=self._work, args=(job.device,), name=f"digit-lab-{job.device}",
                                      daemon=True)
            self._workers[job.device] = worker
            worker.start()

    def _work(self, device: str) -> None:
        while True:
            with self._lock:
                queue = self._queues.get(device)
                if not queue:
                    self._workers.pop(device, None)  # the next submit starts a fresh worker
                    return
                job = queue.popleft()
            try:
                if self.worker == "process":
                    self._train_in_process(device, job)
                else:
                    execute_run(self.store, job.id, on_event=job.on_event, should_stop=job.stop_event.is_set,
                                resume=job.resume)
            except Exception as error:  # noqa: BLE001 - a worker must outlive any one job
                log.exception("job %s crashed", job.id)
                job.on_event({"type": "finished", "status": "failed", "message": str(error), "test_accuracy": None})

    def _train_in_process(self, device: str, job: Job) -> None:
        """Hand `job` to the device's training process (started on first use, again after a crash) and relay its
        events; the run's owner lease passes to that process, which takes the run's lock."""
        with self._lock:
            process = self._processes.get(device)
            if process is None or not process.alive():
                process = self._processes[device] = TrainingProcess(self.store.root)
        if job.stop_event.is_set():  # stopped between leaving the queue and reaching the process
            job.on_event({"type": "finished", "status": "cancelled", "message": "Cancelled before it started.",
                          "test_accuracy": None})
            self.store.update(job.id, status="cancelled", message="Cancelled before it started.", owner=None)
            return
        self.store.update(job.id, owner=Lease.of(process.pid))
        try:
            process.train(job.id, job.resume, job.on_event, stopped=job.stop_event.is_set)
        except WorkerDied as died:
            log.error("job %s: %s", job.id, died)
            self.store.recover_interrupted()  # the run the dead process held becomes interrupted (resumable)
            job.on_event({"type": "finished", "status": "interrupted", "message": str(died), "test_accuracy": None})

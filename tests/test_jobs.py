"""The job manager: background runs queue per device, stop cooperatively, and report to the store."""
from __future__ import annotations

import time

import pytest

from core.errors import DigitLabError
from core.training.experiment import create_run, execute_run
from core.training.jobs import JobManager


def _wait_for(predicate, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


@pytest.fixture(params=["thread", "process"])
def mode(request):
    """Where jobs train: a thread of this process, or the dashboard's default, a child process."""
    return request.param


def test_two_jobs_queue_and_both_finish(store, tiny_cfg, mode):
    jobs = JobManager(store, worker=mode)
    first = jobs.submit(tiny_cfg.replace(epochs=3))
    _wait_for(lambda: first.status != "queued")  # the worker has taken it off the queue
    second = jobs.submit(tiny_cfg.replace(seed=4))
    assert jobs.queue_position(second.id) == 1 and jobs.queue_position(first.id) is None
    assert jobs.wait(second.id).status == "completed"
    assert jobs.get(first.id).status == "completed"
    assert first.finished <= second.started  # one job per device at a time
    snap = jobs.get(second.id).snapshot()
    assert len(snap["history"]) == 2 and snap["steps"] and snap["preview"]["pred"]
    assert store.get(second.id).status == "completed" and store.get(second.id).metrics["test_accuracy"] > 0


def test_stop_cancels_a_running_job_within_a_batch(store, tiny_cfg, mode):
    jobs = JobManager(store, worker=mode)
    job = jobs.submit(tiny_cfg.replace(epochs=500, limit_batches=None))
    _wait_for(lambda: job.snapshot()["step"] >= 3)
    jobs.stop(job.id)
    assert jobs.wait(job.id, timeout=30).status == "cancelled"
    assert store.get(job.id).status == "cancelled"


def test_stopping_a_queued_job_cancels_it_before_it_runs(store, tiny_cfg, mode):
    jobs = JobManager(store, worker=mode)
    running = jobs.submit(tiny_cfg.replace(epochs=500, limit_batches=None))
    _wait_for(lambda: running.status != "queued")
    queued = jobs.submit(tiny_cfg)
    assert jobs.queue_position(queued.id) == 1
    jobs.stop(queued.id)
    assert queued.status == "cancelled" and store.get(queued.id).status == "cancelled"
    assert queued.snapshot()["step"] == 0
    jobs.stop(running.id)
    jobs.wait(running.id, timeout=30)


def test_resume_through_the_manager_continues_the_run(store, tiny_cfg):
    jobs = JobManager(store)
    job = jobs.submit(tiny_cfg.replace(epochs=4))
    _wait_for(lambda: len(job.snapshot()["history"]) >= 1)
    jobs.stop(job.id)
    jobs.wait(job.id)
    resumed = jobs.resume(job.id)
    snap = resumed.snapshot()
    assert snap["history"]  # earlier epochs are shown at once, with their loss curve
    assert snap["steps"][:8] == [tuple(p) for p in store.read_metrics(job.id)[0]["steps"]] and snap["steps"][0][0] == 1
    assert "steps" not in snap["history"][0]
    assert jobs.wait(job.id).status == "completed"
    assert [r["epoch"] for r in store.read_metrics(job.id)] == [1, 2, 3, 4]


def test_completed_runs_do_not_resume(store, tiny_cfg):
    jobs = JobManager(store)
    job = jobs.submit(tiny_cfg.replace(epochs=1))
    jobs.wait(job.id)
    with pytest.raises(DigitLabError, match="only"):
        jobs.resume(job.id)


def test_a_second_manager_in_the_same_process_leaves_live_runs_alone(store, tiny_cfg):
    jobs = JobManager(store)
    job = jobs.submit(tiny_cfg.replace(epochs=500, limit_batches=None))
    _wait_for(lambda: job.snapshot()["step"] >= 2)
    JobManager(store)  # e.g. the UI's resource cache was cleared
    assert store.get(job.id).status == "running"
    assert JobManager.shared(store) is JobManager.shared(type(store)(store.root))
    jobs.stop(job.id)
    jobs.wait(job.id, timeout=30)


def test_queued_and_running_runs_cannot_be_deleted(store, tiny_cfg):
    jobs = JobManager(store)
    running = jobs.submit(tiny_cfg.replace(epochs=500, limit_batches=None))
    queued = jobs.submit(tiny_cfg)
    for job in (running, queued):
        with pytest.raises(ValueError, match="stop it before deleting"):
            store.delete(job.id)
    jobs.stop(queued.id)
    jobs.stop(running.id)
    jobs.wait(running.id, timeout=30)


def test_a_new_manager_marks_orphaned_runs_interrupted(store, tiny_cfg):
    from core.training.experiment import create_run

    orphan = create_run(store, tiny_cfg)
    store.update(orphan.id, status="running", owner_pid=2**22 + 777)
    JobManager(store)
    assert store.get(orphan.id).status == "interrupted"


def test_live_images_per_second_agree_with_the_recorded_figure(store, tiny_cfg):
    events = []
    record = execute_run(store, create_run(store, tiny_cfg.replace(epochs=1, limit_batches=20)).id, on_event=events.append)
    live = [e["images_per_second"] for e in events if e["type"] == "step"][-1]
    recorded = record.timings["images_per_second"]
    assert live == pytest.approx(recorded, rel=0.25)  # both: images over the loop's wall time
    kinds = [e["type"] for e in events]
    assert kinds.index("testing") == len(kinds) - 2 and kinds[-1] == "finished"  # the test phase is announced


def test_two_resume_requests_at_once_queue_the_run_once(store, tiny_cfg):
    import threading

    record = create_run(store, tiny_cfg.replace(epochs=3))
    store.update(record.id, status="cancelled")
    jobs = JobManager(store)
    blocker = jobs.submit(tiny_cfg.replace(epochs=500, limit_batches=None))  # keeps the worker busy meanwhile
    results, barrier = [], threading.Barrier(4)

    def click():
        barrier.wait()
        results.append(jobs.resume(record.id))

    threads = [threading.Thread(target=click) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(job) for job in results}) == 1  # every click got the one queued job
    assert jobs.queue_position(record.id) == 1 and len(jobs.active()) == 2
    jobs.stop(blocker.id)
    assert jobs.wait(record.id).status == "completed"


def test_a_crashed_training_process_leaves_the_run_resumable_and_the_next_job_runs(store, tiny_cfg):
    import os
    import signal

    jobs = JobManager(store, worker="process")
    job = jobs.submit(tiny_cfg.replace(epochs=500, limit_batches=None))
    _wait_for(lambda: job.snapshot()["step"] >= 3)
    child = jobs._processes[job.device]
    assert store.get(job.id).owner.pid == child.pid != os.getpid()  # the child owns the run it trains
    os.kill(child.pid, signal.SIGKILL)  # e.g. the kernel's out-of-memory killer
    assert jobs.wait(job.id, timeout=60).status == "interrupted"
    assert "stopped" in job.message and store.get(job.id).status == "interrupted"
    after = jobs.submit(tiny_cfg)  # a fresh training process takes the next job
    assert jobs.wait(after.id, timeout=120).status == "completed"
    resumed = jobs.resume(job.id)
    jobs.stop(resumed.id)
    assert jobs.wait(resumed.id, timeout=120).status == "cancelled"


def test_the_training_process_yields_the_cpu_in_a_scheduling_group_of_its_own(store, tiny_cfg):
    """Nice 10 and, where Linux groups the CPU by session (autogroups), a session of its own lowered to 10 too:
    a nice inside the server's session would yield only to the server, not to a browser in another session."""
    import os
    from pathlib import Path

    ours = Path("/proc/self/autogroup")
    before = ours.read_text() if ours.exists() else None
    jobs = JobManager(store, worker="process")
    job = jobs.submit(tiny_cfg.replace(epochs=500, limit_batches=None))
    _wait_for(lambda: job.snapshot()["step"] >= 1)
    child = jobs._processes[job.device].pid
    try:
        assert os.getpriority(os.PRIO_PROCESS, child) == os.getpriority(os.PRIO_PROCESS, 0) + 10
        assert os.getsid(child) == child != os.getsid(0)
        group = Path(f"/proc/{child}/autogroup")
        if group.exists():
            assert group.read_text().split()[-1] == "10"  # e.g. "/autogroup-746 nice 10"
            assert ours.read_text() == before  # the server's own group untouched
    finally:
        jobs.stop(job.id)
    assert jobs.wait(job.id, timeout=60).status == "cancelled"


def test_an_unknown_worker_mode_is_refused_with_a_sentence(store):
    with pytest.raises(DigitLabError, match="DIGIT_LAB_WORKER"):
        JobManager(store, worker="fiber")


def test_the_eta_follows_the_recent_pace_not_the_slow_first_steps(monkeypatch):
    from core.training import jobs

    clock = [1000.0]
    monkeypatch.setattr(jobs.time, "time", lambda: clock[0])
    job = jobs.Job(id="r", device="cpu")
    job.on_event({"type": "started", "precision": "fp32", "epoch": 0, "epochs": 1, "total_steps": 1000, "step": 0})

    def step(n, after):
        clock[0] += after
        job.on_event({"type": "step", "step": n, "epoch": 1, "loss": 1.0, "lr": 0.1, "images_per_second": 1.0})

    step(1, 0.0)
    step(2, 20.0)  # the first steps are slow: data loading, the first kernels
    assert job.snapshot()["eta_seconds"] is None  # too little to go on: no number rather than a wild one
    for n in range(3, 203):
        step(n, 0.1)  # then 10 steps a second
    assert job.snapshot()["eta_seconds"] == pytest.approx((1000 - 202) * 0.1, rel=0.02)  # 80 s, not ~300 s

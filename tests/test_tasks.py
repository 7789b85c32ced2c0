"""Background tasks: results, progress, failures as sentences, one at a time."""
from __future__ import annotations

import threading

import pytest

from core.errors import DigitLabError
from core.tasks import TaskRunner


def test_a_task_reports_progress_and_its_result():
    runner = TaskRunner()

    def work(progress):
        for i in range(1, 4):
            progress(i, 3)
        return "done"

    task = runner.wait(runner.submit("count", work).id)
    snap = task.snapshot()
    assert (snap["status"], snap["result"], snap["done"], snap["total"]) == ("done", "done", 3, 3)


def test_a_failing_task_keeps_its_sentence_and_the_runner_goes_on():
    runner = TaskRunner()

    def fail(progress):
        raise DigitLabError("That model has no weights.")

    failed = runner.wait(runner.submit("bad", fail).id)
    assert failed.status == "failed" and failed.message == "That model has no weights."
    assert runner.wait(runner.submit("good", lambda progress: 42).id).result == 42


def test_tasks_run_one_at_a_time():
    runner = TaskRunner()
    gate, running = threading.Event(), []

    def slow(progress):
        running.append(1)
        gate.wait(5)
        return len(running)

    first, second = runner.submit("a", slow), runner.submit("b", slow)
    assert runner.get(second.id).status == "queued"
    gate.set()
    assert runner.wait(first.id).result == 1 and runner.wait(second.id).result == 2


def test_an_unknown_task_is_none():
    assert TaskRunner().get("task-999") is None
    with pytest.raises(TimeoutError):
        TaskRunner().wait("task-999", timeout=0.1)

"""Readiness: a probe that never answers costs each question at most ``wait``, one thread in all."""

from __future__ import annotations

import threading
import time

from syncd.readiness import Readiness


def test_a_probe_that_never_answers_is_not_ready_within_the_wait() -> None:
    release = threading.Event()
    calls = []

    def stuck() -> str | None:
        calls.append(1)
        release.wait(30)
        return None

    readiness = Readiness(stuck, wait=0.3, fresh=1.0)
    try:
        began = time.monotonic()
        answers = [readiness.check() for _ in range(3)]
        took = time.monotonic() - began
        assert all(a is not None and "not answering" in a for a in answers), answers
        # The first waits out the probe's 0.3 s; the others answer at once.
        assert took < 0.8, took
        assert len(calls) == 1  # one probe in flight, never a pile of them
    finally:
        release.set()


def test_an_answer_is_reused_while_fresh_then_asked_again() -> None:
    answers = iter([None, "schema at revision 0001, expected 0006"])
    now = [0.0]
    readiness = Readiness(lambda: next(answers), wait=1.0, fresh=1.0, clock=lambda: now[0])
    assert readiness.check() is None
    now[0] = 0.5
    assert readiness.check() is None
    now[0] = 2.0
    assert readiness.check() == "schema at revision 0001, expected 0006"


def test_a_probe_that_raises_is_its_answer() -> None:
    def broken() -> str | None:
        raise RuntimeError("boom")

    assert Readiness(broken, wait=1.0).check() == "readiness probe failed: RuntimeError"

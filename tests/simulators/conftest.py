"""Fixtures for the simulator tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from syncd.simulators import SimClock
from tests.simulators.simhelpers import START, Receiver


@pytest.fixture
def clock() -> SimClock:
    return SimClock(START)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()

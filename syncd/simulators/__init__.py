"""Fake vendor servers on loopback, for the demo, the tests and the benchmarks.

Deterministic from a seed, with knobs for history size, event rate, late
arrivals, offline systems, name corrections, ties, malformed records and
faults (429, 5xx, latency, dropped connections). See ``DESIGN.md``,
"Simulators", and ``syncd simulate --help``.
"""

from syncd.simulators.clock import Clock, SimClock, WallClock
from syncd.simulators.doorflow import DoorFlowSimulator, OAuthClient
from syncd.simulators.faults import Faults
from syncd.simulators.intserv import IntServSimulator

__all__ = [
    "Clock",
    "DoorFlowSimulator",
    "Faults",
    "IntServSimulator",
    "OAuthClient",
    "SimClock",
    "WallClock",
]

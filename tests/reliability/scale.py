"""How hard the reliability suite pushes.

``scripts/test`` (and so CI) runs every reliability test in a reduced form:
the same faults, fewer repetitions and smaller histories. ``scripts/reliability``
sets ``SYNCD_RELIABILITY=full`` and runs them at the sizes the README's
"Guarantees" section quotes (100 SIGKILLs, 10,000 fuzzed records, ...).
"""

from __future__ import annotations

import os

FULL = os.environ.get("SYNCD_RELIABILITY", "").lower() == "full"


def scaled(full: int, reduced: int) -> int:
    """``full`` under ``scripts/reliability``, ``reduced`` everywhere else."""
    return full if FULL else reduced

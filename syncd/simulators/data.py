"""Synthetic but plausible data shared by the simulators: names, code tables
with their traffic mix, and business-hours timestamps.

Labels of codes the vendor pages do not name (e.g. DoorFlow 34-37, 50-63,
102-104, 220-225) are the simulator's own wording.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Sequence

from syncd.simulators.clock import US

FIRST_NAMES = (
    "Joe", "Jane", "John", "Mary", "Ahmed", "Aisha", "Lars", "Ingrid", "Sven", "Karin",
    "Oliver", "Amelia", "Noah", "Olivia", "Liam", "Emma", "Mohammed", "Fatima", "Lucas", "Sofia",
    "Erik", "Maja", "Anders", "Elin", "Pierre", "Chloe", "Mateo", "Lucia", "Hiroshi", "Yuki",
    "Wei", "Mei", "Arjun", "Priya", "Kwame", "Ama", "Dmitri", "Olga", "Sean", "Siobhan",
    "Tomasz", "Zofia", "Jonas", "Lea", "Mikael", "Saga", "Hugo", "Alice", "Omar", "Layla",
)  # fmt: skip
LAST_NAMES = (
    "Bloggs", "Doe", "Smith", "Jones", "Andersson", "Johansson", "Karlsson", "Nilsson",
    "Eriksson", "Larsson", "Olsson", "Persson", "Svensson", "Gustafsson", "Williams", "Brown",
    "Taylor", "Davies", "Evans", "Wilson", "Thomas", "Roberts", "Johnson", "Lewis", "Walker",
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Dubois",
    "Moreau", "García", "Fernández", "Rossi", "Russo", "Kowalski", "Nowak", "Tanaka", "Suzuki",
    "Chen", "Wang", "Patel", "Singh", "Mensah", "O'Brien", "Ivanova",
)  # fmt: skip

DOOR_NAMES = (
    "Front Entrance", "Reception", "Server Room", "Loading Dock", "Car Park Gate",
    "Stairwell A", "Stairwell B", "Lift Lobby", "Finance Office", "Meeting Room 1",
    "Meeting Room 2", "Kitchen", "Bike Store", "Roof Access", "Warehouse", "Lab",
    "Post Room", "Back Door", "Gym", "Archive",
)  # fmt: skip

# ----------------------------------------------------------------------------
# DoorFlow (API reference codes; see vendor-docs/FACTS.md)

DOORFLOW_LABELS: dict[int, str] = {
    10: "Admitted (Card/fob)",
    11: "Admitted (PIN)",
    12: "Admitted (Manual)",
    13: "Admitted (Request Exit)",
    14: "Admitted (Auxiliary)",
    15: "Admitted (Application)",
    16: "Admitted (Unlocked)",
    17: "Admitted (Apple Wallet)",
    18: "Admitted (Google Wallet)",
    20: "Rejected (Unauthorised card/fob)",
    21: "Rejected (Out of hours)",
    22: "Rejected (Lock down)",
    23: "Rejected (Tamper)",
    24: "Rejected (Unauthorised PIN)",
    25: "Rejected (Timeout)",
    26: "Rejected (Invalid credential type)",
    27: "Rejected (Unauthorised)",
    28: "Rejected (Passback detected)",
    29: "Rejected (Offline)",
    30: "Request exit button pressed",
    31: "Door state normal",
    32: "Door state forced-open",
    33: "Door state extended-open",
    34: "Door opened",
    35: "Door closed",
    36: "Door alarm raised",
    37: "Door alarm cleared",
    40: "Automatic unlock shift started",
    41: "Automatic unlock shift ended",
    42: "Automatic unlock shift skipped",
    50: "Remote unlock",
    51: "Remote lock",
    52: "Remote momentary unlock",
    53: "Remote lockdown started",
    54: "Remote lockdown ended",
    55: "Remote unlock scheduled",
    56: "Remote lock scheduled",
    57: "Remote mode: normal",
    58: "Remote mode: unlocked",
    59: "Remote mode: locked",
    60: "Remote mode: card only",
    61: "Remote mode: card and PIN",
    62: "Remote alarm reset",
    63: "Remote controller restart",
    70: "Admitted (Multi-factor)",
    71: "Rejected (Multi-factor timeout)",
    72: "Rejected (Multi-factor denied)",
    73: "Rejected (Multi-factor unavailable)",
    90: "Tamper detected",
    91: "Tamper cleared",
    100: "Channel sync started",
    101: "Channel sync not required",
    102: "Channel sync in progress",
    103: "Channel sync queued",
    104: "Channel sync partially completed",
    105: "Channel sync completed",
    106: "Channel sync failed",
    107: "Channel sync timing out",
    220: "Directory sync started",
    223: "Directory sync completed",
    224: "Directory sync failed",
    225: "Directory sync skipped",
}
DOORFLOW_CODES = tuple(sorted(DOORFLOW_LABELS))
DOORFLOW_DEFAULT_CODES = frozenset(range(10, 30)) | frozenset(range(70, 74))
"""What ``GET /api/3/events`` returns when ``event_codes`` is omitted."""
DOORFLOW_LISTABLE_CODES = frozenset(
    [*range(10, 19), 70, *range(20, 30), 71, 72, 73, 1, 2, 3, 40, 41, 42, 90, 91,
     *range(31, 38), 30, *range(100, 108), 220, 223, 224, 225]
)  # fmt: skip
"""What ``GET /api/3/events`` accepts in ``event_codes`` (DoorFlow's OpenAPI,
FACTS.md): not 50-63 (remote control), which exist yet cannot be listed. The
simulator generates no channel-status events (1-3), but they may be named."""

DOORFLOW_PERSON_CODES = frozenset(
    [10, 11, 12, 14, 15, 17, 18, *range(20, 30), *range(50, 64), 70, 71, 72, 73]
)
DOORFLOW_NO_DOOR_CODES = frozenset([220, 223, 224, 225])
CRED_NONE, CRED_CARD, CRED_PIN, CRED_MOBILE = 0, 1, 2, 3
DOORFLOW_CREDENTIAL: dict[int, int] = {
    **dict.fromkeys((10, 20, 21, 22, 23, 25, 26, 27, 28, 29, 70, 71, 72, 73), CRED_CARD),
    **dict.fromkeys((11, 24), CRED_PIN),
    **dict.fromkeys((15, 17, 18), CRED_MOBILE),
}

# Business hours: people coming and going.
DOORFLOW_PEOPLE_MIX: dict[int, float] = {
    10: 50, 11: 4, 12: 1, 13: 5, 14: 1, 15: 4, 16: 0.5, 17: 3, 18: 2,
    20: 2, 21: 1.5, 22: 0.2, 23: 0.2, 24: 0.8, 25: 0.5, 26: 0.3, 27: 1, 28: 0.5, 29: 0.3,
    30: 6, 31: 3, 32: 0.3, 33: 1, 34: 1, 35: 1, 36: 0.2, 37: 0.2,
    **dict.fromkeys(range(50, 64), 0.15),
    70: 3, 71: 0.4, 72: 0.3, 73: 0.2,
}  # fmt: skip
# Around the clock: the building and the software.
DOORFLOW_SYSTEM_MIX: dict[int, float] = {
    31: 1, 32: 0.2, 33: 0.3, 36: 0.1, 37: 0.1, 40: 2, 41: 2, 42: 0.3, 90: 0.5, 91: 0.5,
    100: 3, 101: 3, 102: 1, 103: 1, 104: 0.3, 105: 3, 106: 0.4, 107: 0.3,
    220: 1, 223: 1, 224: 0.2, 225: 0.3,
}  # fmt: skip
SYSTEM_SHARE = 0.06
"""Share of events drawn from the around-the-clock mix."""

# ----------------------------------------------------------------------------
# IntServ Access

INTSERV_TYPES: dict[int, tuple[str, str]] = {
    100: ("accessgranted", "Access granted"),
    101: ("accessgranted", "Access granted (code)"),
    102: ("accessgranted", "Access granted (proximity)"),
    103: ("accessgranted", "Access granted (proximity + PIN)"),
    104: ("accessgranted", "Access granted (exit button)"),
    105: ("accessgranted", "Access granted (common code)"),
    200: ("accessdenied", "Access denied"),
    201: ("accessdenied", "Access denied (unknown key)"),
    202: ("accessdenied", "Access denied (expired)"),
    203: ("accessdenied", "Access denied (blacklisted)"),
    204: ("accessdenied", "Access denied (disabled)"),
    205: ("accessdenied", "Access denied (no PIN set)"),
    206: ("accessdenied", "Access denied (not authorized)"),
    207: ("accessdenied", "Access denied (outside schedule)"),
}
INTSERV_MIX: dict[int, float] = {
    100: 5, 101: 8, 102: 50, 103: 10, 104: 10, 105: 2,
    200: 1, 201: 3, 202: 1, 203: 0.3, 204: 0.7, 205: 0.5, 206: 3, 207: 2,
}  # fmt: skip
INTSERV_DOORS = (
    "entrance", "garage", "office 2nd floor", "storage", "bike room", "laundry",
    "back door", "roof terrace", "gym", "reception", "server room", "staff room",
)  # fmt: skip
INTSERV_SUBJECTS = ("Cleaning contractor", "Courier", "Maintenance", "Security patrol")


def cumulative(weights: Sequence[float]) -> list[float]:
    return list(itertools.accumulate(weights))


def det_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def digits(rng: random.Random, n: int) -> str:
    return str(rng.randrange(10 ** (n - 1), 10**n))


HOUR_US = 3600 * US
_WEEKDAY_HOURS = (
    0.02, 0.02, 0.02, 0.02, 0.02, 0.05, 0.2, 0.6, 1.0, 0.8, 0.5, 0.5,
    0.8, 0.7, 0.5, 0.5, 0.6, 0.8, 0.4, 0.2, 0.08, 0.08, 0.03, 0.03,
)  # fmt: skip
_WEEKEND_FACTOR = 0.08


def hour_weight(hour_index: int) -> float:
    """Traffic weight of the hour starting at ``hour_index`` hours after the epoch (UTC)."""
    hour = hour_index % 24
    weekday = (hour_index // 24 + 3) % 7  # 1970-01-01 was a Thursday (3)
    weight = _WEEKDAY_HOURS[hour]
    return weight * _WEEKEND_FACTOR if weekday >= 5 else weight


def business_times(rng: random.Random, start: int, end: int, n: int, unit: int) -> list[int]:
    """``n`` sorted times in ``[start, end]`` (epoch µs, rounded down to ``unit``),
    busy on weekday working hours, quiet at night and at weekends."""
    if n <= 0:
        return []
    if end <= start:
        return [end - end % unit] * n
    hours = range(start // HOUR_US, end // HOUR_US + 1)
    spans = [(max(start, h * HOUR_US), min(end, (h + 1) * HOUR_US)) for h in hours]
    weights = [
        hour_weight(h) * (hi - lo) / HOUR_US for h, (lo, hi) in zip(hours, spans, strict=True)
    ]
    picked = rng.choices(spans, cum_weights=cumulative(weights), k=n)
    rand = rng.random
    out = [(t := lo + int(rand() * (hi - lo))) - t % unit for lo, hi in picked]
    out.sort()
    return out


def uniform_times(rng: random.Random, start: int, end: int, n: int, unit: int) -> list[int]:
    rand = rng.random
    span = max(0, end - start)
    out = [start + int(rand() * span) for _ in range(n)]
    out = [t - t % unit for t in out]
    out.sort()
    return out

"""Every byte a run printed, scanned for every secret it was given.

A secret can leak in more shapes than its own text: URL-encoded in a query
string, inside an HTTP Basic header (base64 of ``key:X``), or in a
``Bearer`` header. :func:`leaks` looks for each shape.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from urllib.parse import quote, quote_plus


def shapes(secret: str) -> set[bytes]:
    """The byte strings that would reveal ``secret`` if printed."""
    found = {secret, quote(secret, safe=""), quote_plus(secret)}
    for user_pass in (f"{secret}:X", f"{secret}:", f":{secret}"):
        found.add(base64.b64encode(user_pass.encode()).decode())
    return {shape.encode() for shape in found if len(shape) >= 6}


def leaks(outputs: Iterable[str | bytes], secrets: Iterable[str]) -> list[str]:
    """Which ``secrets`` appear (in any shape) in any of ``outputs``; [] when none."""
    blobs = [o.encode("utf-8", "surrogateescape") if isinstance(o, str) else o for o in outputs]
    leaked = []
    for secret in secrets:
        if any(shape in blob for shape in shapes(secret) for blob in blobs):
            leaked.append(secret[:3] + "...")
    return leaked


def assert_no_secrets(outputs: Iterable[str | bytes], secrets: Iterable[str]) -> None:
    blobs = list(outputs)
    assert blobs, "nothing was captured to scan"
    leaked = leaks(blobs, secrets)
    assert not leaked, f"secrets printed: {leaked}"

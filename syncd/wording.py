"""How counts read in output: one home for plurals and thousands separators."""

from __future__ import annotations


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``1 page``, ``2 pages``, ``1,024 pages``: the count, then the right noun."""
    noun = singular if n == 1 else (plural or singular + "s")
    return f"{n:,} {noun}"


__all__ = ["counted"]

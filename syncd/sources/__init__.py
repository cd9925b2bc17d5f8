"""Vendor connectors: one module per ``kind``, each exposing ``SOURCE``.

The engine looks a connector up by its kind name here (and configuration
validates kinds the same way, in :func:`syncd.config.known_kinds`), so a new
vendor is one new module and nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

from syncd.errors import ConfigError

if TYPE_CHECKING:
    from syncd.sources.base import Source


def source_class(kind: str) -> type[Source]:
    """The ``SOURCE`` class of the connector for ``kind``."""
    try:
        module = importlib.import_module(f"syncd.sources.{kind}")
    except ModuleNotFoundError as exc:
        raise ConfigError(f"unknown source kind {kind!r}") from exc
    source = getattr(module, "SOURCE", None)
    if source is None:
        raise ConfigError(f"unknown source kind {kind!r}")
    return cast("type[Source]", source)

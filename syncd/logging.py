"""structlog setup, done once at the command-line edge.

Off a TTY (containers, cron, CI) every log entry is one JSON object per line
(``timestamp`` ISO 8601 UTC, ``level``, ``logger``, ``event`` and the bound
fields), rendered with orjson; on a TTY it is structlog's console renderer.
Secrets never reach the output: see :func:`redact_secrets`.

Standard-library logging (httpx, alembic, APScheduler, SQLAlchemy, ...) goes
through the same handler and renderer, but only from WARNING up (or the
configured level if that is stricter), so libraries do not drown syncd's own
events.

Environment overrides: ``SYNCD_LOG_LEVEL`` (debug, info, warning, error,
critical) and ``SYNCD_LOG_FORMAT`` (``json`` or ``console``).

Modules log with ``log = get_logger(__name__)`` (or ``structlog.get_logger()``)
and ``log.info("snake_case_event", key=value)``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from syncd.config import Secret
from syncd.errors import ConfigError

__all__ = ["REDACTED", "configure_logging", "get_logger", "redact_secrets"]

REDACTED = "***"

ENV_LOG_LEVEL = "SYNCD_LOG_LEVEL"
ENV_LOG_FORMAT = "SYNCD_LOG_FORMAT"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

_LIBRARY_LEVEL = logging.WARNING

# Keys whose values are secrets, compared lowercased with '-' read as '_'.
_SECRET_KEYS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "ack_token",
        "api_key",
        "apikey",
        "secret",
        "client_secret",
        "webhook_secret",
        "password",
        "passwd",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "x_api_key",
    }
)
_SECRET_SUFFIXES = ("_token", "_secret", "_password", "_api_key", "_apikey")

_MAX_DEPTH = 5


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    k = key.lower().replace("-", "_")
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def _redact(value: Any, depth: int = 0) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if _is_secret_key(k) else _redact(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_redact(v, depth + 1) for v in value]
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-named keys and :class:`Secret` values.

    Applies to nested dicts and lists too (e.g. a ``headers`` field holding
    ``Authorization``), so a careless log call cannot leak a credential.
    """
    for key, value in list(event_dict.items()):
        if key.startswith("_"):  # structlog's own bookkeeping (_record, ...)
            continue
        if _is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(value)
    return event_dict


_FIRST_KEYS = ("timestamp", "level", "event", "logger")


def _order_keys(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Put timestamp, level, event and logger first in each JSON line, for humans."""
    ordered = {k: event_dict.pop(k) for k in _FIRST_KEYS if k in event_dict}
    ordered.update(event_dict)
    return ordered


def _orjson_dumps(obj: Any, **kwargs: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS, **kwargs).decode()


class _SyncdHandler(logging.StreamHandler[TextIO]):
    """The one handler configure_logging installs on the root logger."""


class _LibraryFilter(logging.Filter):
    """Let syncd's structlog events through at the configured level, others at WARNING+."""

    def __init__(self, library_level: int) -> None:
        super().__init__()
        self.library_level = library_level

    def filter(self, record: logging.LogRecord) -> bool:
        from_structlog = hasattr(record, "_logger") and hasattr(record, "_name")
        return from_structlog or record.levelno >= self.library_level


def _parse_level(level: str, origin: str) -> int:
    number = _LEVELS.get(level.strip().lower())
    if number is None:
        raise ConfigError(
            f"{origin} must be one of debug, info, warning, error, critical; got {level!r}"
        )
    return number


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _traceback_formatter() -> Any:
    """Console tracebacks without local variables: a frame's locals can hold tokens."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return structlog.dev.plain_traceback
    return structlog.dev.RichTracebackFormatter(show_locals=False)


def configure_logging(
    level: str = "info", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog and stdlib logging; safe to call again (it replaces the setup).

    ``json=None`` picks JSON lines unless ``stream`` (default ``sys.stderr``)
    is a TTY. ``SYNCD_LOG_LEVEL`` and ``SYNCD_LOG_FORMAT`` override the
    arguments. An invalid level or format raises ConfigError.
    """
    out: TextIO = sys.stderr if stream is None else stream

    env_level = os.environ.get(ENV_LOG_LEVEL, "").strip()
    level_no = (
        _parse_level(env_level, ENV_LOG_LEVEL) if env_level else _parse_level(level, "log level")
    )
    env_format = os.environ.get(ENV_LOG_FORMAT, "").strip().lower()
    if env_format:
        if env_format not in ("json", "console"):
            raise ConfigError(f"{ENV_LOG_FORMAT} must be 'json' or 'console', got {env_format!r}")
        json = env_format == "json"
    use_json = not _is_tty(out) if json is None else json

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]

    renderer: Any
    final: list[Any]
    if use_json:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        final = [structlog.processors.format_exc_info, _order_keys, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=_is_tty(out), exception_formatter=_traceback_formatter()
        )
        final = [renderer]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, redact_secrets],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *final,
        ],
    )

    handler = _SyncdHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(_LibraryFilter(max(level_no, _LIBRARY_LEVEL)))

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _SyncdHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level_no)

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            redact_secrets,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        # Not cached: tests (structlog.testing.capture_logs) and a second
        # configure_logging() call must take effect on existing loggers.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None, **initial_values: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger; ``name`` is usually ``__name__``."""
    if name is None:
        return structlog.stdlib.get_logger(**initial_values)
    return structlog.stdlib.get_logger(name, **initial_values)

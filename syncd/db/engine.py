"""Create SQLAlchemy engines tuned for syncd's two databases."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from syncd.errors import DatabaseUnavailable


def create_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for ``url`` (already normalized by :mod:`syncd.config`).

    SQLite gets WAL (readers never block the writer), a busy timeout (a second
    process waits instead of failing) and NORMAL sync, which is durable in WAL
    mode across process crashes. A failed statement's parameters are kept out
    of its error text (``hide_parameters``): they can be secrets (a rotated
    OAuth refresh token), and error texts reach logs and ``last_error``.
    """
    kwargs.setdefault("hide_parameters", True)
    engine = sa.create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def describe_url(url: str) -> str:
    """The URL with any password hidden, for messages: ``user:***@`` and ``?password=***``.

    libpq (and so psycopg) also takes the password as a query parameter;
    SQLAlchemy's own redaction only knows the ``user:password@`` form.
    """
    rendered = sa.make_url(url).render_as_string(hide_password=True)
    return _QUERY_SECRET.sub(r"\1***", rendered)


_QUERY_SECRET = re.compile(r"([?&](?:ssl)?password=)[^&]*", re.IGNORECASE)


def check_connection(engine: sa.Engine) -> None:
    """Raise :class:`DatabaseUnavailable` with one clear line if unreachable."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseUnavailable(
            f"cannot reach the database at {describe_url(str(engine.url))}: {first_line(exc)}"
        ) from exc


def first_line(exc: BaseException) -> str:
    """The first line of a driver error, without SQLAlchemy's background links."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__

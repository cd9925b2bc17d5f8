"""Create SQLAlchemy engines tuned for syncd's two databases."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from syncd.errors import DatabaseUnavailable

# Every PostgreSQL connection's liveness bounds (libpq parameters), unless the
# database URL sets its own (``?connect_timeout=30``, ``?options=...``): a
# server that stops answering fails a connection attempt (5 s), a dead peer is
# noticed by TCP keepalives (idle 30 s, then 3 probes 10 s apart) and by
# tcp_user_timeout (data unacknowledged for 60 s), and no statement runs
# longer than 5 minutes. Generous on purpose: a commit unit of 5,000 rows
# takes well under a second, and what waits on a lock (a migration's) may
# wait that long too. Migrations lift the statement limit
# (:func:`syncd.db.migrate.upgrade`); ``sync_state`` locks never wait (try-locks).
PG_LIVENESS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
PG_STATEMENT_TIMEOUT_MS = 300_000


def create_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for ``url`` (already normalized by :mod:`syncd.config`).

    SQLite gets WAL (readers never block the writer), a busy timeout (a second
    process waits instead of failing) and NORMAL sync, which is durable in WAL
    mode across process crashes. PostgreSQL gets :data:`PG_LIVENESS` and a
    statement timeout on every connection, except what the URL or the
    caller's ``connect_args`` set themselves. A failed statement's parameters
    are kept out of its error text (``hide_parameters``): they can be secrets
    (a rotated OAuth refresh token), and error texts reach logs and
    ``last_error``.
    """
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("postgresql"):
        kwargs["connect_args"] = pg_connect_args(url, kwargs.get("connect_args") or {})
    engine = sa.create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def pg_connect_args(url: str, given: dict[str, Any]) -> dict[str, Any]:
    """:data:`PG_LIVENESS` and the statement timeout, under what the URL's query and
    ``given`` say (a user's ``?connect_timeout=`` or ``?options=-c statement_timeout=0``)."""
    query = sa.make_url(url).query
    args = {key: value for key, value in PG_LIVENESS.items() if key not in query}
    if "options" not in query and "options" not in given:
        args["options"] = f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}"
    return {**args, **given}


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

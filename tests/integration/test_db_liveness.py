"""Every PostgreSQL connection gets syncd's liveness bounds, unless the URL says otherwise."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from syncd.db.engine import create_engine

pytestmark = pytest.mark.postgres


def _settings(url: str) -> tuple[str, str]:
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            timeout = conn.exec_driver_sql("SHOW statement_timeout").scalar_one()
            params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
            return str(timeout), str(params.get("keepalives"))
    finally:
        engine.dispose()


def test_statement_timeout_and_keepalives_are_set(pg_url: str) -> None:
    assert _settings(pg_url) == ("5min", "1")


def test_the_url_overrides_them(pg_url: str) -> None:
    url = make_url(pg_url).update_query_dict(
        {"options": "-c statement_timeout=0", "keepalives": "0"}
    )
    assert _settings(url.render_as_string(hide_password=False)) == ("0", "0")

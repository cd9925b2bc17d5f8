"""Run `alembic upgrade head` and `alembic check` on empty PostgreSQL and SQLite databases.

The PostgreSQL database is created fresh next to $SYNCD_TEST_DATABASE_URL and
dropped afterwards; the SQLite one is a temporary file. Alembic is run as the
command a user would run, from the repository root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


def alembic(url: str, *args: str) -> None:
    env = {**os.environ, "SYNCD_DATABASE_URL": url}
    env.pop("SYNCD_CONFIG", None)
    print(f"$ alembic {' '.join(args)}  ({make_url(url).get_backend_name()})", flush=True)
    subprocess.run([sys.executable, "-m", "alembic", *args], cwd=ROOT, env=env, check=True)


def main() -> None:
    admin = os.environ["SYNCD_TEST_DATABASE_URL"]
    name = f"syncd_migrations_{uuid.uuid4().hex[:8]}"
    admin_dsn = make_url(admin).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(admin).set(database=name).render_as_string(False)
        alembic(url, "upgrade", "head")
        alembic(url, "check")
        alembic(url, "downgrade", "base")
        alembic(url, "upgrade", "head")
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/check.db"
        alembic(url, "upgrade", "head")
        alembic(url, "check")


if __name__ == "__main__":
    main()

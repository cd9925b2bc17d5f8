"""A read-only PostgreSQL role for BI tools (``syncd bi-role``).

The SQL is built here, printed or applied by the command. What the role gets:
``CONNECT`` on the database, ``USAGE`` on the schema, ``SELECT`` on every table
and view, the same by default on tables and views created later by the
owner of syncd's tables (future migrations), a ``statement_timeout`` and
read-only transactions. ``sync_state`` is the exception: the role may read
every column but ``refresh_token`` (a rotated OAuth secret). JIT is off for
the role: it compiles each costly plan for up to seconds, longer than most
BI queries over the views take to run. ``sync_health``
reads ``sync_state`` too, and works for the role all the same, because a view
runs with its owner's rights.

Printed, the password is never shown, not even one the user gave: the script
reads it from a psql variable (``psql -v bi_password=...``), so it can be
saved, reviewed and run as it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from syncd.errors import ConfigError

__all__ = [
    "PASSWORD_VARIABLE",
    "SECRET_COLUMNS",
    "RoleRecipe",
    "role_script",
    "role_sql",
    "scram_verifier",
]

PASSWORD_VARIABLE = "bi_password"  # noqa: S105 (the name of a psql variable)
# sync_state's columns a BI role may not read: the rotated OAuth refresh token,
# the digest of the configured one it descends from, and the shared access token.
SECRET_COLUMNS = {
    "sync_state": (
        "refresh_token",
        "refresh_token_origin",
        "access_token",
    )
}
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TIMEOUT = re.compile(r"^\d+(ms|s|min|h)?$")


@dataclass(frozen=True)
class RoleRecipe:
    """What the role is called, where it may connect, how long a query may run."""

    role: str
    database: str
    schema: str = "public"
    statement_timeout: str = "30s"

    def __post_init__(self) -> None:
        for what, value in (("role", self.role), ("schema", self.schema)):
            if not _NAME.match(value):
                raise ConfigError(
                    f"the {what} name {value!r} must be lower-case letters, digits and _ "
                    "(and not start with a digit)"
                )
        if not _TIMEOUT.match(self.statement_timeout):
            raise ConfigError(
                f"--statement-timeout {self.statement_timeout!r} must be a number with "
                "an optional unit ms, s, min or h (e.g. 30s)"
            )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def role_sql(recipe: RoleRecipe, password_sql: str = f":'{PASSWORD_VARIABLE}'") -> list[str]:
    """The statements, in order. ``password_sql`` is the password's SQL (a quoted literal
    when applying, the psql variable when printing)."""
    role, schema = _ident(recipe.role), _ident(recipe.schema)
    secret = ", ".join(_literal(c) for c in SECRET_COLUMNS["sync_state"])
    # every other column of sync_state, as the table is when this runs
    readable = (
        "DO $$ BEGIN EXECUTE 'GRANT SELECT (' || (SELECT string_agg(quote_ident(column_name), "
        "', ' ORDER BY ordinal_position) FROM information_schema.columns "
        f"WHERE table_schema = {_literal(recipe.schema)} AND table_name = 'sync_state' "
        f"AND column_name NOT IN ({secret})) || ') ON {recipe.schema}.sync_state TO "
        f"{recipe.role}'; END $$"
    )
    # The owner of syncd's tables creates the future ones (migrations): default
    # privileges are set for that role, whoever runs this script.
    owner_default = (
        "DO $$ BEGIN EXECUTE 'ALTER DEFAULT PRIVILEGES FOR ROLE ' || quote_ident(("
        f"SELECT tableowner FROM pg_tables WHERE schemaname = {_literal(recipe.schema)} "
        f"AND tablename = 'events')) || ' IN SCHEMA {recipe.schema} "
        f"GRANT SELECT ON TABLES TO {recipe.role}'; END $$"
    )
    return [
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
        f"{_literal(recipe.role)}) THEN CREATE ROLE {role}; END IF; END $$",
        f"ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
        f"PASSWORD {password_sql}",
        f"ALTER ROLE {role} SET statement_timeout = {_literal(recipe.statement_timeout)}",
        f"ALTER ROLE {role} SET default_transaction_read_only = on",
        # BI queries are many and short: JIT compilation costs them seconds
        f"ALTER ROLE {role} SET jit = off",
        f"GRANT CONNECT ON DATABASE {_ident(recipe.database)} TO {role}",
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}",
        f"REVOKE ALL ON {schema}.sync_state FROM {role}",
        readable,
        owner_default,
    ]


def role_script(recipe: RoleRecipe) -> str:
    """The recipe as a psql script, password left to ``psql -v``."""
    header = [
        f"-- Read-only role {recipe.role!r} for BI tools (syncd bi-role).",
        "-- Run as the owner of syncd's tables (the user that runs `syncd migrate`) or a",
        "-- superuser; the password comes from a psql variable, never from this file:",
        f'--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -v {PASSWORD_VARIABLE}="$SYNCD_BI_PASSWORD" '
        "-f bi-role.sql",
        "-- Rerunnable: it creates the role once, then only updates it.",
        "BEGIN;",
    ]
    return "\n".join([*header, *(f"{s};" for s in role_sql(recipe)), "COMMIT;", ""])


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677).

    What psql's ``\\password`` sends instead of the password itself.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"

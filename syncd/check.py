"""``syncd check``: a preflight of everything a pass needs (DESIGN.md "Command line").

Per source, in order, stopping that source's checks at its first failure:

1. ``secrets``: every secret the source names can be read;
2. ``connection``: the vendor host resolves and accepts a TCP (and, for
   ``https``, a TLS) connection: the cause is named (DNS, refused, timeout,
   certificate, HTTPS spoken to an HTTP port or the reverse);
3. ``credentials``: one smallest list request authenticates;
4. ``scope`` (DoorFlow OAuth): ``GET /oauth/token/info`` lists the events scope;
5. ``clock``: the vendor's ``Date`` differs from ours by under 60 s (a warning).

Then the database: ``reachable`` and ``schema`` at head. Nothing is written,
except a rotated OAuth refresh token (through the store, as a pass saves it),
and no file is created: a SQLite file that does not exist is not opened. At
most two vendor requests per source (the list and the token info), plus a
token refresh; no retries.
"""

from __future__ import annotations

import email.utils
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa

from syncd.errors import (
    AuthError,
    CertificateError,
    ConnectionDropped,
    RequestTimeout,
    SourceError,
    SyncdError,
)

if TYPE_CHECKING:
    from syncd.config import SourceConfig
    from syncd.db.store import Store

Status = Literal["ok", "failed", "warning"]

MAX_CLOCK_SKEW_S = 60.0
DATABASE = "database"


@dataclass(frozen=True, slots=True)
class CheckLine:
    """One check's outcome: what was checked, and for a failure what to do."""

    source: str
    check: str
    status: Status
    detail: str

    def to_json(self) -> dict[str, str]:
        return {
            "source": self.source,
            "check": self.check,
            "status": self.status,
            "detail": self.detail,
        }


def format_lines(lines: Iterable[CheckLine]) -> list[str]:
    """Aligned text, one line per check."""
    rows = list(lines)
    width = max((len(r.source) for r in rows), default=8)
    return [f"{r.source:<{width}}  {r.check:<11}  {r.status:<7}  {r.detail}" for r in rows]


# -- pure pieces ------------------------------------------------------------------


def clock_skew(vendor_date: str | None, local: datetime) -> float | None:
    """Seconds the vendor's ``Date`` is ahead of ``local`` (negative: behind); None unknown.

    ``Date`` has whole seconds, truncated: the vendor's time lies in
    [Date, Date + 1 s), so its middle is compared.
    """
    if not vendor_date:
        return None
    try:
        stamped = email.utils.parsedate_to_datetime(vendor_date)
    except (TypeError, ValueError):
        return None
    if stamped.tzinfo is None:
        stamped = stamped.replace(tzinfo=UTC)
    return (stamped - local).total_seconds() + 0.5


def clock_line(name: str, skew: float | None) -> CheckLine:
    if skew is None:
        return CheckLine(name, "clock", "ok", "the vendor sent no Date header: not compared")
    if abs(skew) < MAX_CLOCK_SKEW_S:
        return CheckLine(
            name, "clock", "ok", f"within {max(1, round(abs(skew)))} s of the vendor's"
        )
    direction = "behind" if skew > 0 else "ahead of"
    return CheckLine(
        name,
        "clock",
        "warning",
        f"this machine's clock is {abs(skew):.0f} s {direction} the vendor's Date: "
        "synchronise it (NTP: timedatectl set-ntp true); token expiry and webhook "
        "timestamps depend on it",
    )


def scope_line(name: str, scopes: list[str] | None, wanted: frozenset[str]) -> CheckLine:
    if scopes is not None and wanted & set(scopes):
        return CheckLine(
            name, "scope", "ok", f"the grant includes {sorted(wanted & set(scopes))[0]}"
        )
    granted = ", ".join(scopes or []) or "none"
    return CheckLine(
        name,
        "scope",
        "failed",
        f"the grant lacks the events scope (granted: {granted}): authorize again with scope "
        f"account.event.access.readonly (syncd auth doorflow --source {name})",
    )


# -- I/O ---------------------------------------------------------------------------

_NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"}
)


def connection_problem(  # noqa: PLR0911 (one return per cause)
    base_url: str, timeout: float, tls: ssl.SSLContext
) -> str | None:
    """Resolve, connect and (for https) shake hands with the vendor; the cause and fix, or None."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    where = f"{host}:{port}"
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return f"DNS: cannot resolve {host}: check the host name in base_url ({base_url})"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return (
            f"refused: nothing accepts connections on {where}: check the port in base_url "
            f"({base_url}) and that the vendor (or your proxy) is up"
        )
    except TimeoutError:
        return (
            f"timeout: {where} did not answer within {timeout:g} s: check base_url "
            f"({base_url}), firewalls and proxies"
        )
    except OSError as exc:
        return f"cannot connect to {where}: {exc.strerror or type(exc).__name__}"
    with sock:
        if not https:
            return None
        try:
            with tls.wrap_socket(sock, server_hostname=host):
                return None
        except ssl.SSLCertVerificationError as exc:
            return (
                f"certificate: {exc.verify_message or 'not trusted'} ({where}): if that "
                "certificate is right, trust its CA with ca_file"
            )
        except ssl.SSLError as exc:
            if exc.reason in _NOT_TLS_REASONS:
                return (
                    f"TLS: {where} does not speak HTTPS (HTTPS spoken to an HTTP port): use "
                    f"http://{where} in base_url, or the vendor's HTTPS port"
                )
            return f"TLS: the handshake with {where} failed: {exc.reason or exc}"
        except TimeoutError:
            return (
                f"timeout: {where} accepted a connection but no TLS handshake within {timeout:g} s"
            )
        except OSError as exc:
            return f"TLS: {where} closed the connection during the handshake ({type(exc).__name__})"


def speaks_tls(base_url: str, timeout: float = 2.0) -> bool:
    """Whether the port of an ``http://`` URL completes a TLS handshake (it wants https)."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "", parts.port or 80
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


@dataclass
class _Dated:
    """The ``Date`` of the last vendor response, and our clock when it arrived."""

    date: str | None = None
    local: datetime | None = None

    def __call__(self, response: httpx.Response) -> None:
        self.date = response.headers.get("Date")
        self.local = datetime.now(UTC)


def check_source(
    config: SourceConfig,
    store: Store | None,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    transport: httpx.BaseTransport | None = None,
) -> list[CheckLine]:
    """The checks of one source, stopping at its first failure.

    ``store``: the database when its schema is current (a rotated refresh
    token is saved there, as a pass saves it), else None.
    """
    name = config.name
    if config.secret_problems:
        return [CheckLine(name, "secrets", "failed", p) for p in config.secret_problems]
    lines = [CheckLine(name, "secrets", "ok", f"set: {_secret_names(config)}")]

    problem = (
        None
        if transport is not None
        else connection_problem(config.base_url, min(config.timeout, 10.0), config.tls_verify())
    )
    if problem is not None:
        return [*lines, CheckLine(name, "connection", "failed", problem)]
    lines.append(CheckLine(name, "connection", "ok", _connection_ok(config.base_url)))

    if config.oauth is not None and store is None:
        return [
            *lines,
            CheckLine(
                name,
                "credentials",
                "failed",
                "not tried: an OAuth refresh may rotate the refresh token and the database "
                "cannot store it yet: run `syncd migrate` first",
            ),
        ]
    # One attempt per request, one record per list: at most two requests.
    probe_config = replace(config, max_retries=1, page_size=1)
    dated = _Dated()
    return lines + _vendor_checks(probe_config, store, dated, now, transport)


def _vendor_checks(
    config: SourceConfig,
    store: Store | None,
    dated: _Dated,
    now: Callable[[], datetime],
    transport: httpx.BaseTransport | None,
) -> list[CheckLine]:
    from syncd.engine import build_source, make_client
    from syncd.sources import source_class
    from syncd.sources.base import SourceContext

    name = config.name
    lines: list[CheckLine] = []
    with make_client(config, transport, {"response": [dated]}) as client:
        try:
            if store is not None:
                source: Any = build_source(config, client, store, store.load_state(name))
            else:
                source = source_class(config.kind)(config, client, SourceContext())
            probe = getattr(source, "probe", None)
            if probe is None:
                return [
                    CheckLine(name, "credentials", "ok", f"{config.kind} has no probe: skipped")
                ]
            probe(now())
        except SourceError as exc:
            return [_request_failure(config, exc)]
        lines.append(CheckLine(name, "credentials", "ok", "the vendor accepted them"))
        scopes_of = getattr(source, "granted_scopes", None)
        if config.oauth is not None and scopes_of is not None:
            from syncd.sources.doorflow import EVENTS_SCOPES

            try:
                scopes = scopes_of()
            except SourceError as exc:
                return [*lines, _request_failure(config, exc, check="scope")]
            line = scope_line(name, scopes, EVENTS_SCOPES)
            lines.append(line)
            if line.status == "failed":
                return lines
    local = dated.local or now()
    lines.append(clock_line(name, clock_skew(dated.date, local)))
    return lines


def _request_failure(
    config: SourceConfig, exc: SourceError, check: str = "credentials"
) -> CheckLine:
    name = config.name
    text = " ".join(str(exc).split())
    if isinstance(exc, ConnectionDropped | RequestTimeout):
        if urlsplit(config.base_url).scheme == "http" and speaks_tls(config.base_url):
            where = urlsplit(config.base_url).netloc
            text = (
                f"{where} speaks HTTPS (HTTP spoken to an HTTPS port): use https://{where} in "
                "base_url"
            )
        return CheckLine(name, "connection", "failed", text)
    if isinstance(exc, CertificateError):
        return CheckLine(name, "connection", "failed", text)
    if isinstance(exc, AuthError):
        origin = config.secret_origin("token", "api_key", "refresh_token", "client_id")
        hint = (
            f"authorize again (syncd auth doorflow --source {name}) or set a new refresh token "
            f"in {origin}"
            if config.oauth is not None
            else f"check the secret in {origin}"
        )
        return CheckLine(name, check, "failed", f"{text}: the vendor refused them: {hint}")
    return CheckLine(name, check, "failed", f"{text}: check base_url ({config.base_url})")


def _secret_names(config: SourceConfig) -> str:
    return ", ".join(f"{key} from {origin}" for key, origin in config.secret_origins) or "none"


def _connection_ok(base_url: str) -> str:
    parts = urlsplit(base_url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    return f"{parts.hostname}:{port} accepts {'TLS' if https else 'TCP'} connections"


def check_database(url: str) -> tuple[list[CheckLine], sa.Engine | None]:
    """``reachable`` and ``schema``; the engine when the schema is current (else None).

    A SQLite file that does not exist is not opened (that would create it).
    """
    from syncd.db import migrate as migrations
    from syncd.db.engine import check_connection, create_engine, describe_url

    where = describe_url(url)
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        from pathlib import Path

        database = parsed.database or ""
        if database not in ("", ":memory:") and not Path(database).exists():
            return [
                CheckLine(DATABASE, "reachable", "ok", f"{where}: the file does not exist yet"),
                CheckLine(DATABASE, "schema", "failed", "empty: `syncd migrate` will create it"),
            ], None
    engine = create_engine(url)
    try:
        check_connection(engine)
    except SyncdError as exc:
        engine.dispose()
        return [
            CheckLine(
                DATABASE,
                "reachable",
                "failed",
                f"{exc}: check database_url (or $SYNCD_DATABASE_URL, --database-url) and that "
                "the server is up",
            )
        ], None
    lines = [CheckLine(DATABASE, "reachable", "ok", where)]
    current = migrations.current_revision(engine)
    head = migrations.head_revision()
    if current == head:
        lines.append(CheckLine(DATABASE, "schema", "ok", f"at revision {head}"))
        return lines, engine
    engine.dispose()
    if current is None:
        detail = "empty: `syncd migrate` will create it"
    elif not migrations.known_revision(current):
        detail = f"at revision {current}, which this syncd does not know: upgrade syncd"
    else:
        detail = f"at revision {current}, syncd needs {head}: run `syncd migrate`"
    lines.append(CheckLine(DATABASE, "schema", "failed", detail))
    return lines, None


def run_checks(sources: Iterable[SourceConfig], database_url: str) -> tuple[list[CheckLine], float]:
    """Every source's checks, then the database's; and how long it took (s)."""
    from syncd.db.store import Store

    started = time.perf_counter()
    database_lines, engine = check_database(database_url)
    store = Store(engine) if engine is not None else None
    lines: list[CheckLine] = []
    try:
        for config in sources:
            try:
                lines += check_source(config, store)
            except Exception as exc:  # one source's surprise must not hide the others
                from syncd.engine import describe_error

                lines.append(CheckLine(config.name, "error", "failed", describe_error(exc)))
    finally:
        if engine is not None:
            engine.dispose()
    return lines + database_lines, time.perf_counter() - started


__all__ = [
    "MAX_CLOCK_SKEW_S",
    "CheckLine",
    "check_database",
    "check_source",
    "clock_line",
    "clock_skew",
    "connection_problem",
    "format_lines",
    "run_checks",
    "scope_line",
]

"""TOML + environment -> validated, immutable settings.

Resolution (contract, see DESIGN.md "Configuration" and "Command line"):

- config file: the ``config_path`` argument, else ``$SYNCD_CONFIG``, else
  ``./syncd.toml`` when present, else none at all (zero sources is valid:
  ``syncd demo`` and ``syncd migrate`` need no configuration). A file named
  explicitly (argument or environment) that does not exist is an error.
- database URL: the ``database_url`` argument, else ``$SYNCD_DATABASE_URL``,
  else the file's ``database_url``, else :data:`DEFAULT_DATABASE_URL`; always
  passed through :func:`normalize_database_url`.

Secrets never live in the file: each one is named by ``<key>_env`` (an
environment variable) or ``<key>_file`` (a file, e.g. a Docker/Kubernetes
secret; trailing whitespace is stripped; a relative path is relative to the
config file's directory). They are wrapped in :class:`Secret`, whose repr and
str never show the value.

Every problem raises one :class:`~syncd.errors.ConfigError` whose message is a
single line naming the key (``sources[hq].interval``, or ``sources[0].name``
by index when the source has no usable name) and what to do about it. Messages
never contain a secret value.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import pkgutil
import re
import ssl
import tomllib
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from syncd.errors import ConfigError

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DaemonConfig",
    "OAuthCredentials",
    "Secret",
    "Settings",
    "SourceConfig",
    "known_kinds",
    "load_settings",
    "normalize_database_url",
]

DEFAULT_DATABASE_URL = "sqlite:///syncd.db"
DEFAULT_CONFIG_NAME = "syncd.toml"

ENV_CONFIG = "SYNCD_CONFIG"
ENV_DATABASE_URL = "SYNCD_DATABASE_URL"

_NAME_RE = re.compile(r"[a-z0-9_-]+")
_T = TypeVar("_T")
_NO_SYSTEMS: tuple[str, ...] = ()
_KIND_RE = re.compile(r"[a-z][a-z0-9_]*")


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Secret:
    """A secret string that never shows itself in a repr, str, log line or traceback."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """The secret itself: call this only where it is sent to the vendor."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class OAuthCredentials:
    """A DoorFlow OAuth application plus the (initial) refresh token.

    ``refresh_token`` is None when the grant comes from ``syncd auth doorflow``
    (stored in ``sync_state``); a pass without either says to run it.
    """

    client_id: Secret
    client_secret: Secret
    refresh_token: Secret | None = None


@dataclass(frozen=True)
class SourceConfig:
    """One ``[[sources]]`` table, validated."""

    name: str
    kind: str
    base_url: str
    token: Secret | None = None
    api_key: Secret | None = None
    oauth: OAuthCredentials | None = None
    start: datetime | None = None
    interval: float = 60.0
    lookback: float = 900.0
    page_size: int = 1000
    systems: tuple[str, ...] = ()
    include_access_granted: bool | None = None
    include_access_denied: bool | None = None
    webhook_secret: Secret | None = None
    timeout: float = 30.0
    max_retries: int = 5
    max_retry_wait: float = 60.0
    reconcile_days: float = 7.0
    reconcile_every: float = 3600.0
    timezone: str = "UTC"
    business_hours: tuple[time, time] = (time(6, 0), time(21, 0))
    max_pass_duration: float = 3600.0
    ca_file: Path | None = None  # PEM CA bundle the vendor's certificate is verified against
    # What keeps this source's secrets from being read (a variable not set, a
    # file not mounted): an error only for a command that touches the source.
    secret_problems: tuple[str, ...] = field(default=(), compare=False)
    # Where each secret comes from, for messages: ("token", "$DF_TOKEN"), ...
    secret_origins: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def secret_origin(self, *keys: str) -> str:
        """Where the first of ``keys`` that is configured comes from ("$VAR" or a path)."""
        origins = dict(self.secret_origins)
        found = [f"{origins[k]} ({k})" for k in keys if k in origins]
        return ", ".join(found) or "its credentials"

    def require_secrets(self) -> None:
        """Raise the ConfigError of every secret this source lacks (a command touches it)."""
        if self.secret_problems:
            raise ConfigError.of(self.secret_problems)

    def tls_verify(self) -> ssl.SSLContext:
        """What the source's HTTP client verifies the vendor's certificate with.

        httpx's default trust (certifi's bundle, or ``SSL_CERT_FILE`` /
        ``SSL_CERT_DIR``), as before ``ca_file`` existed; or only the CAs of
        ``ca_file`` (a private CA, a self-signed certificate). Verification
        itself is never optional.
        """
        if self.ca_file is None:
            import httpx  # the HTTP layer's own default; config stays import-light

            return httpx.create_ssl_context()
        return ssl.create_default_context(cafile=str(self.ca_file))


@dataclass(frozen=True)
class DaemonConfig:
    """``[daemon]``: where ``syncd run`` serves HTTP, and how many passes run at once."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 4


@dataclass(frozen=True)
class Settings:
    """Everything a command needs, resolved from arguments, environment and file."""

    database_url: str
    daemon: DaemonConfig
    sources: tuple[SourceConfig, ...]
    config_path: Path | None

    def source(self, name: str) -> SourceConfig:
        """The source called ``name``, or a ConfigError listing the configured ones."""
        for src in self.sources:
            if src.name == name:
                return src
        raise unknown_source(name, (s.name for s in self.sources))


# --------------------------------------------------------------------------- kinds


def known_kinds() -> frozenset[str]:
    """The vendor kinds installed as modules of ``syncd.sources``.

    A kind is a public module ``syncd.sources.<kind>`` (not ``base``, not
    ``_private``) that exposes ``SOURCE``; helper modules of the package
    (shared HTTP, auth, code tables) have no ``SOURCE`` and are not kinds.
    Checking ``SOURCE`` imports the candidate modules, which the engine
    imports anyway; an import error in one is a bug and propagates. Tests
    monkeypatch this function.
    """
    import importlib

    import syncd.sources as sources_pkg

    kinds = set()
    for info in pkgutil.iter_modules(sources_pkg.__path__):
        if info.name == "base" or info.name.startswith("_") or not _KIND_RE.fullmatch(info.name):
            continue
        module = importlib.import_module(f"{sources_pkg.__name__}.{info.name}")
        if hasattr(module, "SOURCE"):
            kinds.add(info.name)
    return frozenset(kinds)


# --------------------------------------------------------------------------- schema

# Secrets: each can come from ``<key>_env`` or ``<key>_file``, never a literal.
_SECRET_KEYS = (
    "token",
    "api_key",
    "client_id",
    "client_secret",
    "refresh_token",
    "webhook_secret",
)
_OAUTH_PARTS = ("client_id", "client_secret", "refresh_token")
# refresh_token may instead be stored by `syncd auth doorflow`
_OAUTH_REQUIRED = ("client_id", "client_secret")

_SOURCE_PLAIN_KEYS = (
    "name",
    "kind",
    "base_url",
    "start",
    "interval",
    "lookback",
    "page_size",
    "systems",
    "include_access_granted",
    "include_access_denied",
    "timeout",
    "max_retries",
    "max_retry_wait",
    "reconcile_days",
    "reconcile_every",
    "timezone",
    "business_hours",
    "max_pass_duration",
    "ca_file",
)
_SOURCE_KEYS = frozenset(
    _SOURCE_PLAIN_KEYS + tuple(f"{k}_{how}" for k in _SECRET_KEYS for how in ("env", "file"))
)
_TOP_KEYS = frozenset({"database_url", "daemon", "sources"})
_DAEMON_KEYS = frozenset({"listen", "workers"})

# Which credentials each vendor accepts. A kind not listed here (a vendor being
# added) is not checked: its connector reports what it lacks.
_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "doorflow": ("token", "api_key", "oauth"),
    "intserv": ("api_key", "token"),
}
_CREDENTIAL_HINT = {
    "token": "token_env/token_file (bearer token)",
    "api_key": "api_key_env/api_key_file",
    "oauth": "client_id_env + client_secret_env + refresh_token_env (OAuth; or their _file "
    "forms; refresh_token_env may be left out once `syncd auth doorflow` stored a token)",
}


# --------------------------------------------------------------------------- public


def load_settings(
    config_path: str | Path | None = None,
    database_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    secrets_for: Iterable[str] | None = None,
) -> Settings:
    """Resolve and validate the settings; raise ConfigError on any problem.

    Every problem of the file is reported at once (one line each). A secret
    that cannot be read (a variable not set, a file missing) is a problem only
    for the sources named by ``secrets_for`` (default: every source): a
    command needs the secrets of the sources it touches, and only those.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    base_dir = Path.cwd() if cwd is None else Path(cwd)

    path = _resolve_config_path(config_path, env, base_dir)
    data: dict[str, Any] = _read_toml(path) if path is not None else {}

    problems = _Problems()
    with problems.collect():
        _check_keys(data, _TOP_KEYS, "")
    secret_dir = path.parent if path is not None else base_dir
    database = DEFAULT_DATABASE_URL
    with problems.collect():
        database = _database_url(data, database_url, env)
    daemon = DaemonConfig()
    with problems.collect():
        daemon = _parse_daemon(data.get("daemon"))
    sources: tuple[SourceConfig, ...] = ()
    with problems.collect():
        sources = _parse_sources(data.get("sources"), env, secret_dir, problems)
    needed = None if secrets_for is None else set(secrets_for)
    for src in sources:
        if needed is None or src.name in needed:
            problems.extend(src.secret_problems)
    problems.raise_any()
    return Settings(database_url=database, daemon=daemon, sources=sources, config_path=path)


class _Problems:
    """Config problems gathered so that one run reports all of them."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)

    def extend(self, messages: Iterable[str]) -> None:
        for message in messages:
            self.add(message)

    @contextlib.contextmanager
    def collect(self) -> Iterator[None]:
        try:
            yield
        except ConfigError as exc:
            self.extend(exc.problems)

    def raise_any(self) -> None:
        if self.messages:
            raise ConfigError.of(self.messages)


def load_database_and_names(
    config_path: str | Path | None = None,
    database_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[str, tuple[str, ...]]:
    """The database URL and the configured source names, reading no secret.

    For the commands that need none (``pause``, ``resume``): the sources'
    other keys are checked by the commands that use them.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    path = _resolve_config_path(config_path, env, Path.cwd() if cwd is None else Path(cwd))
    data: dict[str, Any] = _read_toml(path) if path is not None else {}
    _check_keys(data, _TOP_KEYS, "")
    tables = data.get("sources")
    names = tuple(
        t["name"]
        for t in (tables if isinstance(tables, list) else [])
        if isinstance(t, dict) and isinstance(t.get("name"), str)
    )
    return _database_url(data, database_url, env), names


def unknown_source(name: str, configured: Iterable[str]) -> ConfigError:
    """The one line for a source name that is not configured."""
    names = list(configured)
    hint = _did_you_mean(name, names)
    return ConfigError(f"unknown source {name!r} (configured: {', '.join(names) or 'none'}){hint}")


def _database_url(data: Mapping[str, Any], database_url: str | None, env: Mapping[str, str]) -> str:
    """--database-url, else $SYNCD_DATABASE_URL, else the file's, else the default."""
    file_url = data.get("database_url")
    if file_url is not None and not isinstance(file_url, str):
        raise ConfigError(
            f"database_url must be a string such as {DEFAULT_DATABASE_URL!r}, "
            f"got {_type_name(file_url)}"
        )
    if database_url is not None:
        url, origin = database_url, "--database-url"
    elif env.get(ENV_DATABASE_URL):
        url, origin = env[ENV_DATABASE_URL], ENV_DATABASE_URL
    elif file_url is not None:
        url, origin = file_url, "database_url"
    else:
        url, origin = DEFAULT_DATABASE_URL, "database_url"
    return _normalize_database_url(url, origin)


def normalize_database_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` -> ``postgresql+psycopg://``; validate the URL.

    Other schemes pass unchanged. Raises ConfigError when the URL does not
    parse or names a database SQLAlchemy has no dialect for.
    """
    return _normalize_database_url(url, "database_url")


# --------------------------------------------------------------------------- file


def _resolve_config_path(
    config_path: str | Path | None, env: Mapping[str, str], base_dir: Path
) -> Path | None:
    if config_path is not None and str(config_path) != "":
        explicit, origin = Path(config_path), "--config"
    elif env.get(ENV_CONFIG):
        explicit, origin = Path(env[ENV_CONFIG]), ENV_CONFIG
    else:
        default = base_dir / DEFAULT_CONFIG_NAME
        return default if default.is_file() else None

    path = _expand(explicit, origin)
    if not path.is_absolute():
        path = base_dir / path
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} (from {origin}) does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} (from {origin}) is not a file")
    return path


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8 (TOML files must be UTF-8)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message carries "(at line L, column C)" and never the content.
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


# --------------------------------------------------------------------------- database


def _normalize_database_url(url: str, origin: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{origin} is empty: give a URL such as {DEFAULT_DATABASE_URL!r}")
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("postgresql", "postgres"):
        url = f"postgresql+psycopg://{rest}"
    # The URL may carry a password: messages name the origin, never the URL.
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"{origin} is not a valid database URL: expected e.g. "
            f"'postgresql://user@host:5432/db' or {DEFAULT_DATABASE_URL!r}"
        ) from None
    if parsed.drivername not in SUPPORTED_DRIVERS:
        # A dialect SQLAlchemy knows (mysql://, postgresql+psycopg2://) still
        # needs a driver syncd does not ship: say what works instead.
        raise ConfigError(
            f"{origin}: unsupported database URL scheme {parsed.drivername!r}: syncd supports "
            "postgresql://... (psycopg 3; also postgresql+psycopg://) and sqlite:///PATH"
        )
    if parsed.drivername.startswith("sqlite") and (parsed.database or "").startswith("~"):
        home = _expand(Path(parsed.database or ""), origin)
        url = parsed.set(database=str(home)).render_as_string(hide_password=False)
    return url


SUPPORTED_DRIVERS = frozenset({"postgresql+psycopg", "sqlite", "sqlite+pysqlite"})


def _expand(path: Path, where: str) -> Path:
    """``~`` and ``~user`` expanded; a user that does not exist is a ConfigError."""
    try:
        return path.expanduser()
    except RuntimeError:
        user = str(path).split("/", 1)[0]
        raise ConfigError(
            f"{where}: cannot expand {user!r} in {str(path)!r}: no such user"
        ) from None


# --------------------------------------------------------------------------- daemon


def _parse_daemon(value: object) -> DaemonConfig:
    if value is None:
        return DaemonConfig()
    if not isinstance(value, dict):
        raise ConfigError(f"daemon must be a table ([daemon]), got {_type_name(value)}")
    _check_keys(value, _DAEMON_KEYS, "daemon")
    workers = value.get("workers", DaemonConfig.workers)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
        raise ConfigError(
            f"daemon.workers must be an integer from 1 to 256 (passes run at once), "
            f"got {_describe(workers)}"
        )
    listen = value.get("listen")
    if listen is None:
        return DaemonConfig(workers=workers)
    if not isinstance(listen, str):
        raise ConfigError(
            f'daemon.listen must be a string "host:port" such as "127.0.0.1:8080", '
            f"got {_type_name(listen)}"
        )
    host, port = _parse_listen(listen)
    return DaemonConfig(host=host, port=port, workers=workers)


def parse_listen(listen: str, label: str = "daemon.listen") -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:8080"`` for IPv6) -> (host, port), or a ConfigError."""
    try:
        return _parse_listen(listen)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("daemon.listen", label, 1)) from None


def _parse_listen(listen: str) -> tuple[str, int]:
    bad = ConfigError(
        f'daemon.listen must be "host:port" such as "127.0.0.1:8080", '
        f'"0.0.0.0:8080" or "[::1]:8080", got {listen!r}'
    )
    text = listen.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise bad
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise bad
    if not host or any(c.isspace() for c in host) or not port_text.isdigit():
        raise bad
    port = int(port_text)
    if port > 65535:
        raise ConfigError(f"daemon.listen port must be 0..65535, got {port}")
    return host, port


# --------------------------------------------------------------------------- sources


def _parse_sources(
    value: object, env: Mapping[str, str], secret_dir: Path, problems: _Problems
) -> tuple[SourceConfig, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(
            "sources must be an array of tables: write each source as [[sources]], "
            f"got {_type_name(value)}"
        )
    result: list[SourceConfig] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(value):
        if not isinstance(table, dict):
            problems.add(
                f"sources[{index}] must be a table: write each source as [[sources]], "
                f"got {_type_name(table)}"
            )
            continue
        try:
            src = _parse_source(index, table, env, secret_dir)
        except ConfigError as exc:  # the next source may have problems too
            problems.extend(exc.problems)
            continue
        if src.name in seen:
            problems.add(
                f"sources[{index}].name {src.name!r} is already used by sources[{seen[src.name]}]: "
                "source names must be unique"
            )
            continue
        seen[src.name] = index
        result.append(src)
    return tuple(result)


def _parse_source(  # noqa: PLR0915 (one statement per key, read top to bottom)
    index: int, table: dict[str, Any], env: Mapping[str, str], secret_dir: Path
) -> SourceConfig:
    raw_name = table.get("name")
    label = (
        f"sources[{raw_name}]"
        if isinstance(raw_name, str) and _NAME_RE.fullmatch(raw_name)
        else f"sources[{index}]"
    )

    # Every problem of the source is reported, not only the first: each
    # independent key is parsed on its own, with a default standing in.
    problems = _Problems()

    def field(parse: Callable[[], _T], default: _T) -> _T:
        try:
            return parse()
        except ConfigError as exc:
            problems.extend(exc.problems)
            return default

    for key in table:
        if key in _SECRET_KEYS:
            problems.add(
                f"{label}.{key}: secrets are not read from the config file: "
                f"set {key}_env (an environment variable) or {key}_file (a file) instead"
            )
    with problems.collect():  # a literal secret is reported above, once
        _check_keys({k: v for k, v in table.items() if k not in _SECRET_KEYS}, _SOURCE_KEYS, label)
    secrets = _SecretReader(table, label, env, secret_dir)
    present: set[str] = set()
    for key in _SECRET_KEYS:
        if field(lambda key=key: secrets.configured(key), False):  # type: ignore[misc]
            present.add(key)
    # A misspelled or literal secret key would also read as "no credentials".
    keys_ok = not problems.messages

    name = field(lambda: _parse_name(table, label), "")
    kind = field(lambda: _parse_kind(table, label), "")
    base_url = field(lambda: _parse_base_url(table, label), "")

    p = _SourceFields(table, label)

    def number(key: str, default: float, ok: Callable[[float], bool], what: str) -> float:
        return field(lambda: p.number(key, default, ok, what), default)

    def integer(key: str, default: int, ok: Callable[[int], bool], what: str) -> int:
        return field(lambda: p.integer(key, default, ok, what), default)

    interval = number("interval", 60.0, lambda v: v > 0, "a number of seconds > 0")
    lookback = number("lookback", 900.0, lambda v: v >= 0, "a number of seconds >= 0")
    page_size = integer("page_size", 1000, lambda v: 1 <= v <= 1000, "an integer from 1 to 1000")
    timeout = number("timeout", 30.0, lambda v: v > 0, "a number of seconds > 0")
    max_retries = integer("max_retries", 5, lambda v: v >= 1, "an integer >= 1 (attempts)")
    max_retry_wait = number("max_retry_wait", 60.0, lambda v: v >= 0, "a number of seconds >= 0")
    reconcile_days = number("reconcile_days", 7.0, lambda v: v >= 0, "a number of days >= 0")
    reconcile_every = number("reconcile_every", 3600.0, lambda v: v > 0, "a number of seconds > 0")
    max_pass_duration = number(
        "max_pass_duration", 3600.0, lambda v: v > 0, "a number of seconds > 0"
    )
    timezone = field(lambda: _parse_timezone(table.get("timezone", "UTC"), label), "UTC")
    business_hours = field(
        lambda: _parse_business_hours(table.get("business_hours", "06:00-21:00"), label),
        (time(6, 0), time(21, 0)),
    )
    granted = field(lambda: p.boolean("include_access_granted"), None)
    denied = field(lambda: p.boolean("include_access_denied"), None)
    start = field(lambda: _parse_start(table.get("start"), label), None)
    systems = field(lambda: _parse_systems(table.get("systems"), label), _NO_SYSTEMS)
    ca_file = field(lambda: _parse_ca_file(table.get("ca_file"), label, secret_dir), None)

    oauth_present = present & set(_OAUTH_PARTS)
    if oauth_present and not oauth_present >= set(_OAUTH_REQUIRED):
        missing = [k for k in _OAUTH_REQUIRED if k not in oauth_present]
        problems.add(
            f"{label}: OAuth needs client_id and client_secret (and refresh_token, or a "
            "token stored by `syncd auth doorflow`); "
            f"missing {', '.join(f'{k}_env/{k}_file' for k in missing)}"
        )
    elif kind and keys_ok:
        with problems.collect():
            _check_credentials(kind, label, present, bool(oauth_present))
    problems.raise_any()

    token = secrets.lazy("token")
    api_key = secrets.lazy("api_key")
    oauth: OAuthCredentials | None = None
    if oauth_present:
        client_id, client_secret = secrets.lazy("client_id"), secrets.lazy("client_secret")
        refresh_token = secrets.lazy("refresh_token")
        if client_id and client_secret:
            oauth = OAuthCredentials(client_id, client_secret, refresh_token)
    webhook_secret = secrets.lazy("webhook_secret")

    return SourceConfig(
        name=name,
        kind=kind,
        base_url=base_url,
        token=token,
        api_key=api_key,
        oauth=oauth,
        start=start,
        interval=interval,
        lookback=lookback,
        page_size=page_size,
        systems=systems,
        include_access_granted=granted,
        include_access_denied=denied,
        webhook_secret=webhook_secret,
        timeout=timeout,
        max_retries=max_retries,
        max_retry_wait=max_retry_wait,
        reconcile_days=reconcile_days,
        reconcile_every=reconcile_every,
        timezone=timezone,
        business_hours=business_hours,
        max_pass_duration=max_pass_duration,
        ca_file=ca_file,
        secret_problems=tuple(secrets.problems),
        secret_origins=tuple(secrets.origins.items()),
    )


def _parse_name(table: dict[str, Any], label: str) -> str:
    name = _require_str(table, "name", label)
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"{label}.name {name!r} is invalid: use only lowercase letters, digits, '_' and '-'"
        )
    return name


def _parse_timezone(value: object, label: str) -> str:
    """An IANA zone name that this machine's time-zone database knows."""
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f'{label}.timezone must be an IANA zone name such as "Europe/Stockholm", '
            f"got {_describe(value)}"
        )
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f'{label}.timezone {value!r} is not a known IANA zone (e.g. "Europe/Stockholm", '
            '"America/New_York", "UTC")'
        ) from exc
    return value


_HOURS_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _parse_business_hours(value: object, label: str) -> tuple[time, time]:
    """``"HH:MM-HH:MM"`` local; an end before the start wraps past midnight."""
    bad = ConfigError(
        f'{label}.business_hours must be "HH:MM-HH:MM" such as "06:00-21:00" '
        f"(an end before the start wraps past midnight), got {_describe(value)}"
    )
    match = _HOURS_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise bad
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2 != 0):
        raise bad
    start, end = time(h1, m1), (time(0, 0) if h2 == 24 else time(h2, m2))
    if start == end:
        raise ConfigError(f"{label}.business_hours must not start and end at the same time")
    return start, end


def _parse_kind(table: dict[str, Any], label: str) -> str:
    kind = _require_str(table, "kind", label)
    kinds = known_kinds()
    # The regex keeps a kind from naming anything but a plain module name.
    if _KIND_RE.fullmatch(kind) and kind in kinds:
        return kind
    listed = ", ".join(sorted(kinds)) or "none installed"
    raise ConfigError(
        f"{label}.kind {kind!r} is not a known vendor (known: {listed}){_did_you_mean(kind, kinds)}"
    )


def _parse_base_url(table: dict[str, Any], label: str) -> str:
    url = _require_str(table, "base_url", label).strip()
    what = f"{label}.base_url must be an http(s) URL with a host such as 'https://api.example.com'"
    if any(c.isspace() for c in url):
        raise ConfigError(f"{what}, got {url!r}")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(f"{what}, got {url!r}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what}, got {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{label}.base_url must not have a query or fragment, got {url!r}")
    if parts.username or parts.password:
        # Userinfo would be a secret in the file; don't echo it.
        raise ConfigError(
            f"{label}.base_url must not contain credentials: use token_env/api_key_env instead"
        )
    return url.rstrip("/")


def _parse_ca_file(value: object, label: str, base_dir: Path) -> Path | None:
    """A readable PEM CA bundle (relative to the config file's directory), or None."""
    if value is None:
        return None
    where = f"{label}.ca_file"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be the path of a PEM CA bundle, got {_describe(value)}")
    path = _expand(Path(value.strip()), where)
    if not path.is_absolute():
        path = base_dir / path
    try:
        path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{where}: cannot read {str(path)!r}: {reason}") from None
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError):
        raise ConfigError(
            f"{where}: {str(path)!r} holds no PEM certificate (expected a CA bundle)"
        ) from None
    return path


def _parse_start(value: object, label: str, now: datetime | None = None) -> datetime | None:
    """An aware instant; a bare date means its midnight UTC (as ``--since 2026-11-25``).

    A ``start`` in the future is refused: a pass reads from ``start`` up to
    now, so it would find nothing until that day, and look healthy meanwhile.
    """
    key = f"{label}.start"
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif isinstance(value, time):
        raise ConfigError(
            f"{key} must be a date and time with a timezone, such as '2024-01-01T00:00:00Z'"
        )
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = (
                datetime.combine(date.fromisoformat(text), time(), UTC)
                if _DATE_ONLY_RE.fullmatch(text)
                else datetime.fromisoformat(text)
            )
        except ValueError:
            raise ConfigError(
                f"{key} must be an ISO 8601 date-time such as '2024-01-01T00:00:00Z', got {value!r}"
            ) from None
    else:
        raise ConfigError(
            f"{key} must be an ISO 8601 date-time string such as '2024-01-01T00:00:00Z', "
            f"got {_type_name(value)}"
        )
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ConfigError(
            f"{key} has no timezone: add 'Z' for UTC or an offset such as '+01:00' "
            f"(e.g. '2024-01-01T00:00:00Z')"
        )
    start = parsed.astimezone(UTC)
    if start > (now or datetime.now(UTC)):
        shown = start.isoformat().replace("+00:00", "Z")
        raise ConfigError(
            f"{key} {shown} is in the future: a pass reads from start up to now and would "
            "find nothing until then; use a past time, or leave start out (7 days back)"
        )
    return start


_DATE_ONLY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _parse_systems(value: object, label: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(
            f'{label}.systems must be a list of system ids (strings), such as ["abc123-001"]'
        )
    return tuple(v.strip() for v in value)


def _check_credentials(kind: str, label: str, present: set[str], oauth: bool) -> None:
    accepted = _CREDENTIALS.get(kind)
    if accepted is None:
        return
    found = [k for k in ("token", "api_key") if k in present] + (["oauth"] if oauth else [])
    unsupported = [k for k in found if k not in accepted]
    if unsupported:
        raise ConfigError(
            f"{label}: {kind} does not accept {' or '.join(unsupported)} credentials: "
            f"use one of: {'; '.join(_CREDENTIAL_HINT[k] for k in accepted)}"
        )
    if not found:
        raise ConfigError(
            f"{label}: no credentials for {kind}: set one of: "
            + "; ".join(_CREDENTIAL_HINT[k] for k in accepted)
        )
    if len(found) > 1:
        raise ConfigError(
            f"{label}: several credentials configured ({', '.join(found)}): "
            f"{kind} needs exactly one"
        )


class _SourceFields:
    """Typed, range-checked reads of a source's scalar keys."""

    def __init__(self, table: dict[str, Any], label: str) -> None:
        self._table = table
        self._label = label

    def number(self, key: str, default: float, ok: Callable[[float], bool], what: str) -> float:
        value = self._table.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{self._label}.{key} must be {what}, got {_describe(value)}")
        number = float(value)
        if not math.isfinite(number) or not ok(number):
            raise ConfigError(f"{self._label}.{key} must be {what}, got {value!r}")
        return number

    def integer(self, key: str, default: int, ok: Callable[[int], bool], what: str) -> int:
        value = self._table.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self._label}.{key} must be {what}, got {_describe(value)}")
        if not ok(value):
            raise ConfigError(f"{self._label}.{key} must be {what}, got {value!r}")
        return value

    def boolean(self, key: str) -> bool | None:
        value = self._table.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise ConfigError(
            f"{self._label}.{key} must be true or false (unquoted), got {_describe(value)}"
        )


class _SecretUnavailable(ConfigError):
    """A secret's value cannot be read (unlike a mistake in the file's keys)."""


class _SecretReader:
    """Reads ``<key>_env`` / ``<key>_file``; messages name keys, variables and paths only."""

    def __init__(
        self, table: dict[str, Any], label: str, env: Mapping[str, str], base_dir: Path
    ) -> None:
        self._table = table
        self._label = label
        self._env = env
        self._base_dir = base_dir
        self.problems: list[str] = []
        self.origins: dict[str, str] = {}

    def lazy(self, key: str) -> Secret | None:
        """:meth:`read`, with a value that cannot be read kept in :attr:`problems`."""
        try:
            return self.read(key)
        except _SecretUnavailable as exc:
            self.problems.append(str(exc))
            return None

    def configured(self, key: str) -> bool:
        has_env = f"{key}_env" in self._table
        has_file = f"{key}_file" in self._table
        if has_env and has_file:
            raise ConfigError(f"{self._label}: set either {key}_env or {key}_file, not both")
        return has_env or has_file

    def read(self, key: str) -> Secret | None:
        if not self.configured(key):
            return None
        env_key, file_key = f"{key}_env", f"{key}_file"
        if env_key in self._table:
            var = self._table[env_key]
            where = f"{self._label}.{env_key}"
            if not isinstance(var, str) or not var.strip():
                raise ConfigError(
                    f"{where} must be the name of an environment variable, got {_describe(var)}"
                )
            self.origins[key] = f"${var.strip()}"
            value = self._env.get(var.strip())
            if value is None:
                raise _SecretUnavailable(f"{where}: environment variable {var.strip()} is not set")
            if not value.strip():
                raise _SecretUnavailable(f"{where}: environment variable {var.strip()} is empty")
            # Like a *_file: a secret store's trailing newline is not part of
            # the secret (sent in a header it fails every request).
            return Secret(value.strip())

        where = f"{self._label}.{file_key}"
        path_text = self._table[file_key]
        if not isinstance(path_text, str) or not path_text.strip():
            raise ConfigError(f"{where} must be a file path, got {_describe(path_text)}")
        path = _expand(Path(path_text.strip()), where)
        if not path.is_absolute():
            path = self._base_dir / path
        self.origins[key] = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise _SecretUnavailable(f"{where}: cannot read {str(path)!r}: {reason}") from None
        except UnicodeDecodeError:
            raise _SecretUnavailable(f"{where}: {str(path)!r} is not UTF-8 text") from None
        value = text.strip()
        if not value:
            raise _SecretUnavailable(f"{where}: {str(path)!r} is empty")
        return Secret(value)


# --------------------------------------------------------------------------- helpers


def _check_keys(table: Mapping[str, Any], allowed: Iterable[str], prefix: str) -> None:
    allowed = sorted(allowed)
    for key in table:
        if key not in allowed:
            where = f"{prefix}.{key}" if prefix else key
            hint = _did_you_mean(key, allowed)
            if not hint:
                hint = f" (allowed: {', '.join(allowed)})" if len(allowed) <= 5 else ""
            scope = f"in {prefix}" if prefix else "at the top level"
            raise ConfigError(f"{where}: unknown key {scope}{hint}")


def _require_str(table: Mapping[str, Any], key: str, label: str) -> str:
    value = table.get(key)
    if value is None:
        raise ConfigError(f"{label}.{key} is required")
    if not isinstance(value, str):
        raise ConfigError(f"{label}.{key} must be a string, got {_describe(value)}")
    if not value.strip():
        raise ConfigError(f"{label}.{key} must not be empty")
    return value


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


def _type_name(value: object) -> str:
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def _describe(value: object) -> str:
    """A short, single-line rendering of a non-secret value for messages."""
    if isinstance(value, (str, bool, int, float)):
        text = repr(value)
        return f"{_type_name(value)} {text if len(text) <= 60 else text[:57] + '...'}"
    return _type_name(value)

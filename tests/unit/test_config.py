"""syncd.config: resolution order, secrets, validation messages."""

from __future__ import annotations

import os
import ssl
import textwrap
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from syncd import config
from syncd.config import (
    DEFAULT_DATABASE_URL,
    DaemonConfig,
    OAuthCredentials,
    Secret,
    Settings,
    SourceConfig,
    load_settings,
    normalize_database_url,
)
from syncd.errors import ConfigError
from tests.tlscerts import self_signed

TOKEN = "tok-SUPERSECRET-1"
API_KEY = "key-SUPERSECRET-2"
ENV = {
    "DF_TOKEN": TOKEN,
    "IS_KEY": API_KEY,
    "CID": "cid-SUPERSECRET-3",
    "CSEC": "csec-SUPERSECRET-4",
    "RTOK": "rtok-SUPERSECRET-5",
    "HOOK": "hook-SUPERSECRET-6",
}
SECRETS = (*ENV.values(), "SUPERSECRET")
REAL_KNOWN_KINDS = config.known_kinds  # captured before the autouse fixture replaces it

DOORFLOW = """
[[sources]]
name = "hq"
kind = "doorflow"
base_url = "https://api.doorflow.com"
token_env = "DF_TOKEN"
"""


@pytest.fixture(autouse=True)
def _kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vendor modules may not exist yet: pretend both are installed."""
    monkeypatch.setattr(config, "known_kinds", lambda: frozenset({"doorflow", "intserv"}))


def write(tmp_path: Path, text: str, name: str = "syncd.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = write(tmp_path, text)
    return load_settings(path, environ=ENV if env is None else env, cwd=tmp_path)


def source(**keys: object) -> str:
    """One [[sources]] table: a valid doorflow source with ``keys`` overriding/adding."""
    base: dict[str, object] = {
        "name": "hq",
        "kind": "doorflow",
        "base_url": "https://api.doorflow.com",
        "token_env": "DF_TOKEN",
    }
    base.update(keys)
    lines = ["[[sources]]"]
    for key, value in base.items():
        if value is None:
            continue
        lines.append(f"{key} = {value}" if isinstance(value, Raw) else f"{key} = {toml(value)}")
    return "\n".join(lines) + "\n"


class Raw(str):
    """A TOML value written verbatim."""


def toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return str(value)


def error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    message = str(info.value)
    assert "\n" not in message
    for secret in SECRETS:
        assert secret not in message
    return message


# --------------------------------------------------------------------------- Secret


def test_secret_hides_its_value() -> None:
    secret = Secret("hunter2")
    assert repr(secret) == "Secret('***')"
    assert str(secret) == "Secret('***')"
    assert f"{secret}" == "Secret('***')"
    assert "hunter2" not in repr(SourceConfig("a", "doorflow", "https://x", token=secret))
    assert secret.reveal() == "hunter2"
    assert secret == Secret("hunter2")


# --------------------------------------------------------------------------- resolution


def test_no_config_file_is_valid(tmp_path: Path) -> None:
    settings = load_settings(environ={}, cwd=tmp_path)
    assert settings == Settings(
        database_url=DEFAULT_DATABASE_URL, daemon=DaemonConfig(), sources=(), config_path=None
    )


def test_default_config_file_in_cwd(tmp_path: Path) -> None:
    path = write(tmp_path, DOORFLOW)
    settings = load_settings(environ=ENV, cwd=tmp_path)
    assert settings.config_path == path
    assert [s.name for s in settings.sources] == ["hq"]


def test_default_config_file_uses_process_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, DOORFLOW)
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ=ENV).config_path == tmp_path / "syncd.toml"


def test_env_config_beats_default_and_argument_beats_env(tmp_path: Path) -> None:
    write(tmp_path, DOORFLOW)
    env_file = write(tmp_path, DOORFLOW.replace('"hq"', '"from_env"'), "env.toml")
    arg_file = write(tmp_path, DOORFLOW.replace('"hq"', '"from_arg"'), "arg.toml")
    env = {**ENV, "SYNCD_CONFIG": str(env_file)}
    assert load_settings(environ=env, cwd=tmp_path).sources[0].name == "from_env"
    assert load_settings(arg_file, environ=env, cwd=tmp_path).sources[0].name == "from_arg"
    assert load_settings(str(arg_file), environ=env, cwd=tmp_path).config_path == arg_file


def test_relative_config_path_is_relative_to_cwd(tmp_path: Path) -> None:
    path = write(tmp_path, DOORFLOW, "conf.toml")
    assert load_settings("conf.toml", environ=ENV, cwd=tmp_path).config_path == path
    env = {**ENV, "SYNCD_CONFIG": "conf.toml"}
    assert load_settings(environ=env, cwd=tmp_path).config_path == path


def test_empty_syncd_config_env_is_ignored(tmp_path: Path) -> None:
    assert load_settings(environ={"SYNCD_CONFIG": ""}, cwd=tmp_path).config_path is None


def test_explicit_missing_config_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml.* \(from --config\) does not exist"):
        load_settings(missing, environ={}, cwd=tmp_path)


def test_missing_config_file_from_env_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml.* \(from SYNCD_CONFIG\) does not exist"):
        load_settings(environ={"SYNCD_CONFIG": str(missing)}, cwd=tmp_path)


def test_config_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a file"):
        load_settings(tmp_path, environ={}, cwd=tmp_path)


def test_database_url_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, 'database_url = "sqlite:///file.db"\n', "other.toml")
    env = {"SYNCD_DATABASE_URL": "sqlite:///env.db"}
    assert load_settings(environ={}, cwd=tmp_path).database_url == DEFAULT_DATABASE_URL
    assert load_settings(path, environ={}, cwd=tmp_path).database_url == "sqlite:///file.db"
    assert load_settings(path, environ=env, cwd=tmp_path).database_url == "sqlite:///env.db"
    got = load_settings(path, "sqlite:///arg.db", environ=env, cwd=tmp_path).database_url
    assert got == "sqlite:///arg.db"
    # an empty environment variable counts as unset
    empty = {"SYNCD_DATABASE_URL": ""}
    assert load_settings(path, environ=empty, cwd=tmp_path).database_url == "sqlite:///file.db"


def test_database_url_is_normalized_from_every_origin(tmp_path: Path) -> None:
    path = write(tmp_path, 'database_url = "postgres://u@h/file"\n')
    assert load_settings(path, environ={}).database_url == "postgresql+psycopg://u@h/file"
    env = {"SYNCD_DATABASE_URL": "postgresql://u@h/env"}
    assert load_settings(environ=env, cwd=tmp_path).database_url == "postgresql+psycopg://u@h/env"
    got = load_settings(database_url="postgresql://u@h/arg", environ={}, cwd=tmp_path)
    assert got.database_url == "postgresql+psycopg://u@h/arg"


def test_uses_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_DATABASE_URL", "sqlite:///from-os.db")
    assert load_settings(cwd=tmp_path).database_url == "sqlite:///from-os.db"
    assert "SYNCD_DATABASE_URL" in os.environ


# --------------------------------------------------------------------------- database URL


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://syncd@127.0.0.1:5432/syncd",
            "postgresql+psycopg://syncd@127.0.0.1:5432/syncd",
        ),
        ("postgres://u:pw@db/syncd", "postgresql+psycopg://u:pw@db/syncd"),
        ("postgresql+psycopg://u@db/syncd", "postgresql+psycopg://u@db/syncd"),
        ("sqlite:///syncd.db", "sqlite:///syncd.db"),
        ("sqlite://", "sqlite://"),
        ("sqlite:////abs/path.db", "sqlite:////abs/path.db"),
    ],
)
def test_normalize_database_url(url: str, expected: str) -> None:
    assert normalize_database_url(url) == expected


@pytest.mark.parametrize(
    "url", ["", "   ", "not a url", "postgresql://u:s3cretpw@h:notaport/db", "nosuchdb://x/y"]
)
def test_normalize_database_url_rejects(url: str) -> None:
    with pytest.raises(ConfigError, match="database") as info:
        normalize_database_url(url)
    assert "s3cretpw" not in str(info.value)


def test_bad_database_url_names_its_origin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SYNCD_DATABASE_URL"):
        load_settings(environ={"SYNCD_DATABASE_URL": "junk"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="--database-url"):
        load_settings(database_url="junk", environ={}, cwd=tmp_path)
    assert "database_url must be a string" in error(tmp_path, "database_url = 5\n")
    assert error(tmp_path, 'database_url = "junk"\n').startswith("database_url ")


# --------------------------------------------------------------------------- full file


FULL = """
database_url = "postgresql://syncd@127.0.0.1:5432/syncd"

[daemon]
listen = "0.0.0.0:9090"

[[sources]]
name = "hq"
kind = "doorflow"
base_url = "https://api.doorflow.com/"
token_env = "DF_TOKEN"
start = "2024-01-01T00:00:00Z"
interval = 30
lookback = 600.5
page_size = 200
webhook_secret_env = "HOOK"
timeout = 10
max_retries = 3
max_retry_wait = 120
reconcile_days = 14

[[sources]]
name = "stockholm"
kind = "intserv"
base_url = "https://api.intserv.se/v1"
api_key_env = "IS_KEY"
systems = ["abc123-001", "abc123-002"]
start = "2024-01-01T02:00:00+02:00"
include_access_granted = true
include_access_denied = false
"""


def test_full_example(tmp_path: Path) -> None:
    settings = load(tmp_path, FULL)
    assert settings.database_url == "postgresql+psycopg://syncd@127.0.0.1:5432/syncd"
    assert settings.daemon == DaemonConfig(host="0.0.0.0", port=9090)  # noqa: S104
    hq, sthlm = settings.sources
    assert hq == SourceConfig(
        name="hq",
        kind="doorflow",
        base_url="https://api.doorflow.com",
        token=Secret(TOKEN),
        start=datetime(2024, 1, 1, tzinfo=UTC),
        interval=30.0,
        lookback=600.5,
        page_size=200,
        webhook_secret=Secret(ENV["HOOK"]),
        timeout=10.0,
        max_retries=3,
        max_retry_wait=120.0,
        reconcile_days=14.0,
    )
    assert isinstance(hq.interval, float)
    assert sthlm.base_url == "https://api.intserv.se/v1"
    assert sthlm.api_key == Secret(API_KEY)
    assert sthlm.token is None
    assert sthlm.systems == ("abc123-001", "abc123-002")
    assert sthlm.start == datetime(2024, 1, 1, tzinfo=UTC)
    assert sthlm.start.tzinfo is UTC
    assert sthlm.include_access_granted is True
    assert sthlm.include_access_denied is False
    assert settings.source("stockholm") is sthlm
    for secret in SECRETS:
        assert secret not in repr(settings)


def test_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, DOORFLOW)
    assert settings.daemon == DaemonConfig("127.0.0.1", 8080)
    src = settings.source("hq")
    assert src.start is None
    assert (src.interval, src.lookback, src.page_size) == (60.0, 900.0, 1000)
    assert (src.timeout, src.max_retries, src.max_retry_wait, src.reconcile_days) == (
        30.0,
        5,
        60.0,
        7.0,
    )
    assert src.systems == ()
    assert src.include_access_granted is None
    assert src.include_access_denied is None
    assert src.webhook_secret is None
    assert src.api_key is None
    assert src.oauth is None


def test_unknown_source_lookup(tmp_path: Path) -> None:
    settings = load(tmp_path, DOORFLOW + source(name="office"))
    with pytest.raises(ConfigError, match=r"^unknown source 'x' \(configured: hq, office\)$"):
        settings.source("x")
    with pytest.raises(ConfigError, match="did you mean 'office'"):
        settings.source("ofice")
    empty = load_settings(environ={}, cwd=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"configured: none"):
        empty.source("hq")


# --------------------------------------------------------------------------- secrets


def test_oauth_from_env(tmp_path: Path) -> None:
    text = source(
        token_env=None,
        client_id_env="CID",
        client_secret_env="CSEC",
        refresh_token_env="RTOK",
    )
    src = load(tmp_path, text).source("hq")
    assert src.oauth == OAuthCredentials(
        client_id=Secret(ENV["CID"]),
        client_secret=Secret(ENV["CSEC"]),
        refresh_token=Secret(ENV["RTOK"]),
    )
    assert src.token is None
    assert src.api_key is None


def test_api_key_for_doorflow(tmp_path: Path) -> None:
    src = load(tmp_path, source(token_env=None, api_key_env="IS_KEY")).source("hq")
    assert src.api_key == Secret(API_KEY)
    assert src.token is None


def test_token_for_intserv(tmp_path: Path) -> None:
    text = source(kind="intserv", base_url="https://api.intserv.se")
    assert load(tmp_path, text).source("hq").token == Secret(TOKEN)


def test_secret_from_file_strips_trailing_whitespace(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text(TOKEN + "  \n\n", encoding="utf-8")
    src = load(tmp_path, source(token_env=None, token_file=str(secret_file)), env={}).sources[0]
    assert src.token is not None
    assert src.token.reveal() == TOKEN


def test_relative_secret_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "secrets").mkdir()
    (conf_dir / "secrets" / "token").write_text(TOKEN + "\n", encoding="utf-8")
    path = write(conf_dir, source(token_env=None, token_file="secrets/token"))
    settings = load_settings(path, environ={}, cwd=tmp_path)
    assert settings.sources[0].token == Secret(TOKEN)


def test_ca_file_relative_to_the_config_file_verifies_against_that_bundle_only(
    tmp_path: Path,
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    cert, _ = self_signed(conf_dir)
    path = write(conf_dir, source(ca_file=cert.name))
    src = load_settings(path, environ=ENV, cwd=tmp_path).sources[0]
    assert src.ca_file == cert
    context = src.tls_verify()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "127.0.0.1"),),)]


def test_without_ca_file_certificates_are_verified_against_httpx_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = load(tmp_path, source()).sources[0]
    assert src.ca_file is None
    context = src.tls_verify()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    # The same CAs as httpx's own default (certifi's bundle, what syncd trusted
    # before ca_file existed), not whatever the host's OpenSSL directory holds.
    for variable in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(variable, raising=False)
    trusted = src.tls_verify().get_ca_certs()
    assert trusted, "no CA loaded: not certifi's bundle"
    assert trusted == httpx.create_ssl_context().get_ca_certs()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("missing.pem", "sources[hq].ca_file: cannot read '{dir}/missing.pem': No such file"),
        (".", "sources[hq].ca_file: cannot read '{dir}': Is a directory"),
        ("not-pem.txt", "sources[hq].ca_file: '{dir}/not-pem.txt' holds no PEM certificate"),
        ("", "sources[hq].ca_file must be the path of a PEM CA bundle, got"),
        (Raw("true"), "sources[hq].ca_file must be the path of a PEM CA bundle, got"),
    ],
)
def test_ca_file_problems_are_one_clear_line(tmp_path: Path, value: str, expected: str) -> None:
    (tmp_path / "not-pem.txt").write_text("hello\n", encoding="utf-8")
    message = error(tmp_path, source(ca_file=value))
    assert message.startswith(expected.format(dir=tmp_path).replace("/.'", "'")), message


def test_oauth_from_files(tmp_path: Path) -> None:
    for name in ("cid", "csec", "rtok"):
        (tmp_path / name).write_text(f"{name}-value\n", encoding="utf-8")
    text = source(
        token_env=None,
        client_id_file=str(tmp_path / "cid"),
        client_secret_file=str(tmp_path / "csec"),
        refresh_token_file=str(tmp_path / "rtok"),
    )
    oauth = load(tmp_path, text, env={}).sources[0].oauth
    assert oauth is not None
    assert oauth.refresh_token.reveal() == "rtok-value"
    assert "rtok-value" not in repr(oauth)


@pytest.mark.parametrize(
    "key", ["token", "api_key", "client_id", "client_secret", "refresh_token", "webhook_secret"]
)
def test_literal_secret_in_file_is_rejected(tmp_path: Path, key: str) -> None:
    message = error(tmp_path, source(**{key: "SUPERSECRET"}))
    assert f"sources[hq].{key}" in message
    assert f"{key}_env" in message
    assert f"{key}_file" in message


def test_missing_env_var(tmp_path: Path) -> None:
    message = error(tmp_path, DOORFLOW, env={})
    assert message == "sources[hq].token_env: environment variable DF_TOKEN is not set"


def test_empty_env_var(tmp_path: Path) -> None:
    message = error(tmp_path, DOORFLOW, env={"DF_TOKEN": "  "})
    assert "sources[hq].token_env" in message
    assert "DF_TOKEN is empty" in message


def test_env_name_must_be_a_string(tmp_path: Path) -> None:
    message = error(tmp_path, source(token_env=5))
    assert "sources[hq].token_env must be the name of an environment variable" in message


def test_unreadable_secret_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    message = error(tmp_path, source(token_env=None, token_file=str(missing)), env={})
    assert "sources[hq].token_file" in message
    assert str(missing) in message


def test_secret_file_is_a_directory(tmp_path: Path) -> None:
    message = error(tmp_path, source(token_env=None, token_file=str(tmp_path)), env={})
    assert "sources[hq].token_file: cannot read" in message


def test_empty_secret_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n", encoding="utf-8")
    message = error(tmp_path, source(token_env=None, token_file=str(tmp_path / "token")))
    assert "sources[hq].token_file" in message
    assert "empty" in message


def test_env_and_file_for_one_secret(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN, encoding="utf-8")
    message = error(tmp_path, source(token_file=str(tmp_path / "token")))
    assert message == "sources[hq]: set either token_env or token_file, not both"


def test_env_and_file_for_webhook_secret(tmp_path: Path) -> None:
    message = error(tmp_path, source(webhook_secret_env="HOOK", webhook_secret_file="/x"))
    assert "webhook_secret_env or webhook_secret_file" in message


def test_webhook_secret_missing_env(tmp_path: Path) -> None:
    message = error(tmp_path, source(webhook_secret_env="NOPE"))
    assert "sources[hq].webhook_secret_env" in message
    assert "NOPE" in message


# --------------------------------------------------------------------------- credentials


def test_doorflow_without_credentials(tmp_path: Path) -> None:
    message = error(tmp_path, source(token_env=None))
    assert message.startswith("sources[hq]: no credentials for doorflow")
    for key in ("token_env", "api_key_env", "client_id_env"):
        assert key in message


def test_doorflow_with_two_credentials(tmp_path: Path) -> None:
    message = error(tmp_path, source(api_key_env="IS_KEY"))
    assert "sources[hq]" in message
    assert "token, api_key" in message
    assert "exactly one" in message


def test_doorflow_token_plus_oauth(tmp_path: Path) -> None:
    text = source(client_id_env="CID", client_secret_env="CSEC", refresh_token_env="RTOK")
    assert "token, oauth" in error(tmp_path, text)


def test_partial_oauth(tmp_path: Path) -> None:
    message = error(tmp_path, source(token_env=None, client_id_env="CID", refresh_token_env="RTOK"))
    assert "sources[hq]: OAuth needs" in message
    assert "client_secret_env" in message


def test_oauth_without_refresh_token_is_accepted(tmp_path: Path) -> None:
    """The refresh token may come from `syncd auth doorflow` (stored, not configured)."""
    text = source(token_env=None, client_id_env="CID", client_secret_env="CSEC")
    oauth = load(tmp_path, text).sources[0].oauth
    assert oauth is not None
    assert oauth.refresh_token is None


def test_intserv_without_credentials(tmp_path: Path) -> None:
    message = error(tmp_path, source(kind="intserv", token_env=None))
    assert message.startswith("sources[hq]: no credentials for intserv")
    assert "api_key_env" in message


def test_intserv_rejects_oauth(tmp_path: Path) -> None:
    text = source(
        kind="intserv",
        token_env=None,
        client_id_env="CID",
        client_secret_env="CSEC",
        refresh_token_env="RTOK",
    )
    message = error(tmp_path, text)
    assert "intserv does not accept oauth" in message


def test_credentials_checked_before_env_vars_are_read(tmp_path: Path) -> None:
    """A structural mistake is reported even when the variables are missing too."""
    message = error(tmp_path, source(api_key_env="IS_KEY"), env={})
    assert "exactly one" in message


def test_new_kind_is_not_credential_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "known_kinds", lambda: frozenset({"acme"}))
    src = load(tmp_path, source(kind="acme", token_env=None)).sources[0]
    assert src.kind == "acme"


# --------------------------------------------------------------------------- TOML / keys


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    message = error(tmp_path, '[[sources]]\nname = "hq"\nkind = \n')
    assert "invalid TOML" in message
    assert "line 3" in message
    assert "column" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "syncd.toml"
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(path, environ={})


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = error(tmp_path, 'databse_url = "sqlite://"\n')
    assert message.startswith("databse_url: unknown key at the top level")
    assert "did you mean 'database_url'?" in message


def test_source_table_instead_of_array(tmp_path: Path) -> None:
    message = error(tmp_path, '[sources]\nname = "hq"\n')
    assert "sources must be an array of tables" in message
    assert "[[sources]]" in message


def test_singular_source_table_suggests_sources(tmp_path: Path) -> None:
    message = error(tmp_path, '[[source]]\nname = "hq"\n')
    assert "did you mean 'sources'?" in message


def test_unknown_source_key(tmp_path: Path) -> None:
    message = error(tmp_path, source(intervall=60))
    assert message.startswith("sources[hq].intervall: unknown key")
    assert "did you mean 'interval'?" in message


def test_misspelled_secret_key_suggests_env_form(tmp_path: Path) -> None:
    message = error(tmp_path, source(token_env=None, tokn_env="DF_TOKEN"))
    assert "sources[hq].tokn_env" in message
    assert "did you mean 'token_env'?" in message


def test_unknown_daemon_key(tmp_path: Path) -> None:
    message = error(tmp_path, '[daemon]\nlisen = "1.2.3.4:80"\n')
    assert message.startswith("daemon.lisen: unknown key")
    assert "did you mean 'listen'?" in message


def test_daemon_not_a_table(tmp_path: Path) -> None:
    assert "daemon must be a table" in error(tmp_path, 'daemon = "x"\n')


def test_source_entry_not_a_table(tmp_path: Path) -> None:
    assert "sources[0] must be a table" in error(tmp_path, "sources = [1]\n")


# --------------------------------------------------------------------------- name/kind/url


def test_missing_required_keys(tmp_path: Path) -> None:
    assert error(tmp_path, source(name=None)) == "sources[0].name is required"
    assert error(tmp_path, source(kind=None)) == "sources[hq].kind is required"
    assert error(tmp_path, source(base_url=None)) == "sources[hq].base_url is required"


def test_index_label_counts_from_zero(tmp_path: Path) -> None:
    message = error(tmp_path, DOORFLOW + source(name=None))
    assert message == "sources[1].name is required"


def test_name_must_be_a_string(tmp_path: Path) -> None:
    assert "sources[0].name must be a string" in error(tmp_path, source(name=1))


@pytest.mark.parametrize("name", ["HQ", "hq office", "hq.main", "ö", ""])
def test_invalid_name(tmp_path: Path, name: str) -> None:
    message = error(tmp_path, source(name=name))
    assert message.startswith("sources[0].name")
    assert "[a-z0-9_-]" in message or "lowercase" in message or "empty" in message


@pytest.mark.parametrize("name", ["hq", "hq-2", "branch_office", "42"])
def test_valid_names(tmp_path: Path, name: str) -> None:
    assert load(tmp_path, source(name=name)).sources[0].name == name


def test_duplicate_name(tmp_path: Path) -> None:
    message = error(tmp_path, DOORFLOW + DOORFLOW)
    assert message.startswith("sources[1].name 'hq' is already used by sources[0]")
    assert "unique" in message


def test_unknown_kind(tmp_path: Path) -> None:
    message = error(tmp_path, source(kind="doorflw"))
    assert message.startswith("sources[hq].kind 'doorflw' is not a known vendor")
    assert "known: doorflow, intserv" in message
    assert "did you mean 'doorflow'?" in message


@pytest.mark.parametrize("kind", ["../evil", "doorflow.x", "DoorFlow", "_private"])
def test_kind_must_be_a_plain_module_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Even a (bogus) discovered name is refused unless it is a plain module name."""
    monkeypatch.setattr(config, "known_kinds", lambda: frozenset({"doorflow", kind}))
    assert "is not a known vendor" in error(tmp_path, source(kind=kind))


def test_no_kinds_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "known_kinds", frozenset)
    assert "none installed" in error(tmp_path, DOORFLOW)


def test_real_known_kinds_lists_vendor_modules_only() -> None:
    import importlib
    import pkgutil

    import syncd.sources

    modules = {m.name for m in pkgutil.iter_modules(syncd.sources.__path__)}
    assert "base" in modules
    expected = {
        m
        for m in modules
        if m != "base"
        and not m.startswith("_")
        and hasattr(importlib.import_module(f"syncd.sources.{m}"), "SOURCE")
    }
    kinds = REAL_KNOWN_KINDS()
    assert kinds == expected
    assert "base" not in kinds
    assert not kinds & {"http", "auth", "codes"}  # helper modules are not vendors


@pytest.mark.parametrize(
    "url",
    [
        "api.doorflow.com",
        "ftp://api.doorflow.com",
        "https://",
        "https:///path",
        "https://api.doorflow.com:notaport",
        "https://api.doorflow .com",
        "https://api.doorflow.com/?x=1",
        "https://api.doorflow.com/#frag",
    ],
)
def test_bad_base_url(tmp_path: Path, url: str) -> None:
    message = error(tmp_path, source(base_url=url))
    assert message.startswith("sources[hq].base_url")


def test_base_url_with_credentials_does_not_echo_them(tmp_path: Path) -> None:
    message = error(tmp_path, source(base_url="https://user:SUPERSECRET@api.doorflow.com"))
    assert "sources[hq].base_url must not contain credentials" in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.doorflow.com/", "https://api.doorflow.com"),
        ("http://127.0.0.1:8001//", "http://127.0.0.1:8001"),
        ("https://proxy.example/doorflow/", "https://proxy.example/doorflow"),
        ("HTTPS://API.DOORFLOW.COM", "HTTPS://API.DOORFLOW.COM"),
    ],
)
def test_base_url_trailing_slash_removed(tmp_path: Path, url: str, expected: str) -> None:
    assert load(tmp_path, source(base_url=url)).sources[0].base_url == expected


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("interval", 0),
        ("interval", -1),
        ("interval", Raw("nan")),
        ("interval", Raw("inf")),
        ("lookback", -0.5),
        ("page_size", 0),
        ("page_size", 1001),
        ("timeout", 0),
        ("max_retries", 0),
        ("max_retry_wait", -1),
        ("reconcile_days", -1),
    ],
)
def test_out_of_range(tmp_path: Path, key: str, value: object) -> None:
    message = error(tmp_path, source(**{key: value}))
    assert message.startswith(f"sources[hq].{key} must be")
    assert "got" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("interval", "60"),
        ("interval", True),
        ("lookback", [1]),
        ("page_size", 10.0),
        ("page_size", "1000"),
        ("max_retries", 2.5),
        ("timeout", "30s"),
        ("include_access_granted", "yes"),
        ("include_access_denied", 1),
    ],
)
def test_wrong_types(tmp_path: Path, key: str, value: object) -> None:
    message = error(tmp_path, source(**{key: value}))
    assert message.startswith(f"sources[hq].{key} must be")


def test_wrong_type_message_shows_the_value(tmp_path: Path) -> None:
    message = error(tmp_path, source(interval="sixty"))
    assert message == "sources[hq].interval must be a number of seconds > 0, got a string 'sixty'"


def test_boundaries_accepted(tmp_path: Path) -> None:
    src = load(tmp_path, source(lookback=0, page_size=1, interval=0.5)).sources[0]
    assert (src.lookback, src.page_size, src.interval) == (0.0, 1, 0.5)
    assert load(tmp_path, source(page_size=1000)).sources[0].page_size == 1000


def test_name_and_index_labels_for_second_source(tmp_path: Path) -> None:
    message = error(tmp_path, DOORFLOW + source(name="hq2", interval=-5))
    assert message.startswith("sources[hq2].interval")


# --------------------------------------------------------------------------- start


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-01T00:00:00Z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T00:00:00+00:00", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T01:30:00+01:30", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-06-30 23:59:59.5-04:00", datetime(2024, 7, 1, 3, 59, 59, 500000, tzinfo=UTC)),
        (Raw("2024-01-01T00:00:00Z"), datetime(2024, 1, 1, tzinfo=UTC)),
        (Raw("2024-01-01T02:00:00+02:00"), datetime(2024, 1, 1, tzinfo=UTC)),
    ],
)
def test_start_parsed_to_aware_utc(tmp_path: Path, value: object, expected: datetime) -> None:
    start = load(tmp_path, source(start=value)).sources[0].start
    assert start == expected
    assert start is not None
    assert start.utcoffset() == timedelta(0)
    assert start.tzinfo is UTC


def test_start_keeps_instant_not_wall_clock(tmp_path: Path) -> None:
    start = load(tmp_path, source(start="2024-01-01T00:00:00-05:00")).sources[0].start
    assert start == datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=-5)))


@pytest.mark.parametrize("value", ["2024-01-01T00:00:00", Raw("2024-01-01T00:00:00")])
def test_naive_start_rejected(tmp_path: Path, value: object) -> None:
    message = error(tmp_path, source(start=value))
    assert message.startswith("sources[hq].start")
    assert "Z" in message
    assert "offset" in message or "timezone" in message


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00Z", 20240101, Raw("12:00:00")])
def test_bad_start(tmp_path: Path, value: object) -> None:
    message = error(tmp_path, source(start=value))
    assert message.startswith("sources[hq].start")
    assert "2024-01-01T00:00:00Z" in message


# --------------------------------------------------------------------------- systems


@pytest.mark.parametrize("value", ["abc123-001", [1, 2], ["ok", 3], [""], Raw("{ a = 1 }")])
def test_bad_systems(tmp_path: Path, value: object) -> None:
    message = error(tmp_path, source(kind="intserv", systems=value))
    assert message.startswith("sources[hq].systems must be a list of system ids")


def test_empty_systems_list(tmp_path: Path) -> None:
    assert load(tmp_path, source(systems=[])).sources[0].systems == ()


# --------------------------------------------------------------------------- daemon


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("0.0.0.0:80", "0.0.0.0", 80),  # noqa: S104
        ("localhost:0", "localhost", 0),
        ("[::1]:9000", "::1", 9000),
        ("[::]:8080", "::", 8080),
    ],
)
def test_daemon_listen(tmp_path: Path, listen: str, host: str, port: int) -> None:
    daemon = load(tmp_path, f'[daemon]\nlisten = "{listen}"\n').daemon
    assert daemon == DaemonConfig(host=host, port=port)


def test_daemon_without_listen_uses_default(tmp_path: Path) -> None:
    assert load(tmp_path, "[daemon]\n").daemon == DaemonConfig()


@pytest.mark.parametrize(
    "listen", ["8080", ":8080", "host:", "host:http", "::1:8080", "[::1]8080", "h:70000", "a b:1"]
)
def test_bad_daemon_listen(tmp_path: Path, listen: str) -> None:
    message = error(tmp_path, f'[daemon]\nlisten = "{listen}"\n')
    assert message.startswith("daemon.listen")


def test_daemon_listen_wrong_type(tmp_path: Path) -> None:
    message = error(tmp_path, "[daemon]\nlisten = 8080\n")
    assert message.startswith("daemon.listen must be a string")


# ----------------------------------------------------------------- service, history, BI


def test_service_and_bi_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, source())
    src = settings.sources[0]
    assert (src.reconcile_every, src.timezone, src.max_pass_duration) == (3600.0, "UTC", 3600.0)
    assert src.business_hours == (time(6, 0), time(21, 0))
    assert settings.daemon.workers == 4


def test_service_and_bi_keys(tmp_path: Path) -> None:
    text = "[daemon]\nworkers = 8\n" + source(
        reconcile_every=600,
        timezone="Europe/Stockholm",
        business_hours="22:00-06:30",
        max_pass_duration=120,
    )
    settings = load(tmp_path, text)
    src = settings.sources[0]
    assert (src.reconcile_every, src.timezone, src.max_pass_duration) == (
        600.0,
        "Europe/Stockholm",
        120.0,
    )
    assert src.business_hours == (time(22, 0), time(6, 30))
    assert settings.daemon.workers == 8


def test_business_hours_until_midnight(tmp_path: Path) -> None:
    src = load(tmp_path, source(business_hours="06:00-24:00")).sources[0]
    assert src.business_hours == (time(6, 0), time(0, 0))


@pytest.mark.parametrize("value", ["Mars/Olympus", "", 3, "../../etc/passwd"])
def test_unknown_timezone(tmp_path: Path, value: object) -> None:
    message = error(tmp_path, source(timezone=value))
    assert message.startswith("sources[hq].timezone")


@pytest.mark.parametrize("value", ["6-21", "06:00", "25:00-06:00", "06:60-07:00", 9, "08:00-08:00"])
def test_bad_business_hours(tmp_path: Path, value: object) -> None:
    message = error(tmp_path, source(business_hours=value))
    assert message.startswith("sources[hq].business_hours must")


@pytest.mark.parametrize("value", [0, 257, "4", True])
def test_bad_workers(tmp_path: Path, value: object) -> None:
    message = error(tmp_path, "[daemon]\nworkers = " + toml(value) + "\n" + source())
    assert message.startswith("daemon.workers must be")


@pytest.mark.parametrize("key", ["reconcile_every", "max_pass_duration"])
def test_service_numbers_positive(tmp_path: Path, key: str) -> None:
    assert error(tmp_path, source(**{key: 0})).startswith(f"sources[hq].{key} must be")

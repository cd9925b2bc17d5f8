"""syncd.logging: JSON lines off a TTY, console on one, never a secret."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
import structlog

from syncd.config import Secret
from syncd.errors import ConfigError
from syncd.logging import configure_logging, get_logger, redact_secrets

SECRET = "s3cr3t-VALUE"


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SYNCD_LOG_LEVEL", raising=False)
    monkeypatch.delenv("SYNCD_LOG_FORMAT", raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [orjson.loads(line) for line in text.splitlines()]


def test_json_lines_off_a_tty() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    log = get_logger("syncd.engine")
    log.info("pass_finished", source="hq", events=12, lag_seconds=1.5)
    log.warning("pass_slow", source="hq")
    first, second = lines(out)
    assert first["event"] == "pass_finished"
    assert first["level"] == "info"
    assert first["logger"] == "syncd.engine"
    assert (first["source"], first["events"], first["lag_seconds"]) == ("hq", 12, 1.5)
    assert list(first)[:3] == ["timestamp", "level", "event"]
    stamp = datetime.fromisoformat(first["timestamp"])
    assert first["timestamp"].endswith("Z")
    assert stamp.utcoffset() == timedelta(0)
    assert second["event"] == "pass_slow"
    assert second["level"] == "warning"


def test_structlog_get_logger_works_too() -> None:
    out = io.StringIO()
    configure_logging(stream=out, json=True)
    structlog.get_logger().info("hello", n=1)
    (entry,) = lines(out)
    assert (entry["event"], entry["n"]) == ("hello", 1)


def test_non_json_values_are_rendered() -> None:
    out = io.StringIO()
    configure_logging(stream=out, json=True)
    when = datetime(2024, 1, 1, 12, 0)
    get_logger("syncd").info("odd_values", when=when, obj=object(), codes={1: "a"})
    (entry,) = lines(out)
    assert entry["when"] == "2024-01-01T12:00:00"
    assert entry["obj"].startswith("<object")
    assert entry["codes"] == {"1": "a"}


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "access_token",
        "refresh_token",
        "api_key",
        "secret",
        "password",
        "authorization",
        "Authorization",
        "client_secret",
        "webhook_secret",
        "X-Api-Key",
        "db_password",
    ],
)
def test_secret_keys_are_redacted(key: str) -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    get_logger("syncd").info("request_sent", **{key: SECRET}, source="hq")
    assert SECRET not in out.getvalue()
    (entry,) = lines(out)
    assert entry[key] == "***"
    assert entry["source"] == "hq"


def test_secret_values_and_nested_secrets_are_redacted() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    get_logger("syncd").info(
        "request_sent",
        credential=Secret(SECRET),
        headers={"Authorization": f"Bearer {SECRET}", "Accept": "application/json"},
        attempts=[{"token": SECRET}, Secret(SECRET)],
        token_env="DOORFLOW_TOKEN",
        continuation_key="abc",
    )
    assert SECRET not in out.getvalue()
    (entry,) = lines(out)
    assert entry["credential"] == "***"
    assert entry["headers"] == {"Authorization": "***", "Accept": "application/json"}
    assert entry["attempts"] == [{"token": "***"}, "***"]
    # names of variables and paging keys are not secrets
    assert entry["token_env"] == "DOORFLOW_TOKEN"
    assert entry["continuation_key"] == "abc"


def test_secrets_redacted_on_the_console_too() -> None:
    out = TTY()
    configure_logging(stream=out)
    get_logger("syncd").info("request_sent", token=SECRET, key=Secret(SECRET))
    text = out.getvalue()
    assert "request_sent" in text
    assert SECRET not in text


def test_redact_secrets_processor() -> None:
    event = {"event": "x", "api_key": SECRET, "n": 1, "_record": object()}
    out = redact_secrets(None, "info", dict(event))
    assert out["api_key"] == "***"
    assert out["n"] == 1
    assert out["_record"] is event["_record"]


def test_console_on_a_tty() -> None:
    out = TTY()
    configure_logging(stream=out)
    get_logger("syncd").info("pass_finished", source="hq")
    text = out.getvalue()
    assert "pass_finished" in text
    assert "source" in text
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(text.splitlines()[0])


def test_json_forced_on_a_tty() -> None:
    out = TTY()
    configure_logging(json=True, stream=out)
    get_logger("syncd").info("pass_finished")
    assert lines(out)[0]["event"] == "pass_finished"


def test_console_forced_off_a_tty() -> None:
    out = io.StringIO()
    configure_logging(json=False, stream=out)
    get_logger("syncd").info("pass_finished", source="hq")
    assert "pass_finished" in out.getvalue()
    assert not out.getvalue().startswith("{")


def test_level_filters() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    log = get_logger("syncd")
    log.debug("hidden")
    log.info("shown")
    assert [e["event"] for e in lines(out)] == ["shown"]

    out = io.StringIO()
    configure_logging("debug", stream=out)
    get_logger("syncd").debug("now_shown")
    assert [e["event"] for e in lines(out)] == ["now_shown"]


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("SYNCD_LOG_FORMAT", "json")
    out = TTY()
    configure_logging("warning", json=False, stream=out)
    get_logger("syncd").debug("debug_event")
    assert lines(out)[0]["event"] == "debug_event"

    monkeypatch.setenv("SYNCD_LOG_FORMAT", "console")
    out2 = io.StringIO()
    configure_logging(json=True, stream=out2)
    get_logger("syncd").info("console_event")
    assert not out2.getvalue().startswith("{")
    assert "console_event" in out2.getvalue()


@pytest.mark.parametrize(
    ("var", "value"), [("SYNCD_LOG_LEVEL", "loud"), ("SYNCD_LOG_FORMAT", "xml")]
)
def test_bad_env_values(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        configure_logging(stream=io.StringIO())


def test_bad_level_argument() -> None:
    with pytest.raises(ConfigError, match="log level"):
        configure_logging("verbose", stream=io.StringIO())


def test_stdlib_libraries_only_from_warning() -> None:
    out = io.StringIO()
    configure_logging("debug", stream=out)
    httpx = logging.getLogger("httpx")
    httpx.info("HTTP Request: GET https://example")
    httpx.debug("noise")
    httpx.warning("retrying %s", "soon")
    logging.getLogger("apscheduler.scheduler").info("Added job")
    (entry,) = lines(out)
    assert entry["event"] == "retrying soon"
    assert entry["level"] == "warning"
    assert entry["logger"] == "httpx"
    assert "timestamp" in entry


def test_library_threshold_follows_a_stricter_level() -> None:
    out = io.StringIO()
    configure_logging("error", stream=out)
    logging.getLogger("alembic").warning("meh")
    get_logger("syncd").warning("also_hidden")
    logging.getLogger("alembic").error("bad")
    assert [e["event"] for e in lines(out)] == ["bad"]


def test_exceptions_are_one_json_line() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("syncd").exception("pass_failed", source="hq")
    (entry,) = lines(out)
    assert entry["event"] == "pass_failed"
    assert entry["level"] == "error"
    assert "ValueError: boom" in entry["exception"]


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    get_logger("syncd").info("once")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1


def test_loggers_created_before_configuration_follow_it() -> None:
    log = get_logger("syncd.early")
    out = io.StringIO()
    configure_logging(stream=out)
    log.info("late_config")
    assert lines(out)[0]["event"] == "late_config"


def test_capture_logs_still_works_after_configuration() -> None:
    configure_logging(stream=io.StringIO())
    log = get_logger("syncd")
    with structlog.testing.capture_logs() as captured:
        log.info("captured_event", n=1)
    assert captured == [{"event": "captured_event", "n": 1, "log_level": "info"}]

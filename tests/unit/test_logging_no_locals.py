"""Console tracebacks show no local variables: a frame's locals can hold tokens."""

from __future__ import annotations

import io

import structlog

from syncd.logging import configure_logging


def test_console_traceback_shows_no_locals() -> None:
    # Built at run time: the traceback's source lines must not hold it.
    secret = "-".join(["dfr", "LOCAL", "SECRET"])
    printed = io.StringIO()
    configure_logging("info", json=False, stream=printed)
    try:
        refresh_token = secret

        def fail(token: str) -> None:
            raise RuntimeError("boom")

        try:
            fail(refresh_token)
        except RuntimeError:
            structlog.get_logger("t").warning("pass_failed", exc_info=True)
    finally:
        configure_logging("error", json=True)
    output = printed.getvalue()
    assert "RuntimeError" in output
    assert "boom" in output
    assert secret not in output

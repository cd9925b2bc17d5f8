"""The scanner itself: it must find each shape a secret can leak in."""

from __future__ import annotations

import base64

import pytest

from tests.reliability.secretscan import assert_no_secrets, leaks

SECRET = "s3cr3t-t0ken/with+chars"


@pytest.mark.parametrize(
    "printed",
    [
        f"Authorization: Bearer {SECRET}",
        "url?token=s3cr3t-t0ken%2Fwith%2Bchars",
        "Basic " + base64.b64encode(f"{SECRET}:X".encode()).decode(),
    ],
)
def test_each_shape_of_a_secret_is_found(printed: str) -> None:
    assert leaks([b"noise", printed], [SECRET]) == ["s3c..."]
    with pytest.raises(AssertionError):
        assert_no_secrets([printed], [SECRET])


def test_clean_output_passes_and_empty_capture_does_not() -> None:
    assert_no_secrets(["pass_finished source=hq"], [SECRET])
    with pytest.raises(AssertionError, match="nothing was captured"):
        assert_no_secrets([], [SECRET])

"""parse_page: a page's storability decided once, from how it was decoded.

The shortcut may only ever say "storable" for a page none of whose values
:func:`syncd.records.unstorable` would refuse; saying "check each record"
for a clean page only costs speed.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.errors import BadBody
from syncd.records import unstorable
from syncd.sources.http import parse_json, parse_page

OVERFLOW = object()  # rendered as 1e400: infinite for the standard library


def render(value: Any, ascii_only: bool) -> bytes:
    if value is OVERFLOW:
        return b"1e400"
    if isinstance(value, list):
        return b"[" + b",".join(render(item, ascii_only) for item in value) + b"]"
    if isinstance(value, dict):
        return (
            b"{"
            + b",".join(
                render(k, ascii_only) + b":" + render(v, ascii_only) for k, v in value.items()
            )
            + b"}"
        )
    text = json.dumps(value, ensure_ascii=ascii_only)
    # Unescaped lone surrogates become raw surrogate bytes, as a broken encoder sends them.
    return text.encode("utf-8", "surrogatepass")


# Any text, including NUL and lone surrogates.
texts = st.text(st.characters(codec=None, categories=None), max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
    | st.just(OVERFLOW)
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4)
)


def response(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, request=httpx.Request("GET", "http://vendor/e"))


@settings(max_examples=400, deadline=None)
@given(st.lists(values, max_size=5), st.booleans())
def test_a_page_called_storable_holds_nothing_unstorable(page: list[Any], ascii_only: bool) -> None:
    body = render(page, ascii_only)
    try:
        parsed = parse_page(response(body))
    except BadBody:
        return
    assert parsed.body == parse_json(response(body))
    if parsed.storable:
        assert unstorable(parsed.body) is None


@pytest.mark.parametrize(
    ("body", "storable"),
    [
        (orjson.dumps([{"id": 1, "name": "Åsa", "hex": "6e6958", "n": 1.5e300}]), True),
        (b'[{"name": "a\\u0000b"}]', False),
        (b'[{"name": "a\\ud800b"}]', False),
        (b'[{"n": 1e400}]', False),
        (b'[{"id": 123456789012345678901234567890}]', False),
    ],
)
def test_clean_pages_skip_the_walk_and_risky_ones_do_not(body: bytes, storable: bool) -> None:
    assert parse_page(response(body)).storable is storable

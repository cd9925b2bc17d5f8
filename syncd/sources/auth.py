"""Credentials as ``httpx.Auth``: static bearer tokens, and OAuth refresh-token grants.

OAuth (RFC 6749 refresh-token grant, as DoorFlow runs it): the access token is
refreshed shortly before it expires and once more when the server answers 401
anyway. Refresh tokens may rotate on use: a new one is persisted through
``on_rotate`` *before* it is used for anything, so a crash can never leave the
integration holding only a revoked token. When the server sends no new refresh
token, the old one is kept.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Generator

import httpx
import orjson

from syncd.errors import AuthError

# Refresh this long before the server's stated expiry: clocks skew and a
# request can take a while to arrive.
EXPIRY_MARGIN_S = 60.0
EXPIRY_MARGIN_SHARE = 0.1  # ...but never more than this share of a short lifetime


def token_fingerprint(token: str) -> str:
    """What is stored to recognise a configured refresh token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def choose_refresh_token(configured: str, stored: str | None, stored_origin: str | None) -> str:
    """The refresh token to use: the stored (rotated) one only if it descends from ``configured``.

    ``stored_origin`` is the fingerprint of the configured token the stored one
    was rotated from. A configured token that differs from it is a new
    authorization (after a revocation the user follows syncd's own advice and
    sets a new one): it wins over the stored one, which descends from a dead
    grant. A stored token without an origin was saved before syncd recorded
    one; it is the live token of the only grant syncd knew, so it is kept (the
    next rotation records its origin).
    """
    if stored is None:
        return configured
    if stored_origin is None or stored_origin == token_fingerprint(configured):
        return stored
    return configured


class BearerToken(httpx.Auth):
    """``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class OAuthRefresh(httpx.Auth):
    """Bearer tokens obtained with the ``refresh_token`` grant at ``token_url``."""

    requires_response_body = True

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        on_rotate: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._on_rotate = on_rotate
        self._clock = clock
        self._access_token: str | None = None
        self._expires_at = 0.0
        self._margin = EXPIRY_MARGIN_S
        self._lock = threading.Lock()
        self.refreshes = 0

    def _needs_refresh(self) -> bool:
        return self._access_token is None or self._clock() >= self._expires_at - self._margin

    def _token_request(self) -> httpx.Request:
        return httpx.Request(
            "POST",
            self._token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": self._refresh_token,
                "client_id": self._client_id,
                "client_secret": self._client_secret,
            },
            headers={"Accept": "application/json"},
        )

    def _accept(self, response: httpx.Response) -> None:
        response.read()
        if response.status_code != 200:
            raise AuthError(
                f"OAuth token refresh failed with HTTP {response.status_code}; "
                "the refresh token may be revoked: authorize syncd again and set a new one"
            )
        try:
            body = orjson.loads(response.content)
            access = body["access_token"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise AuthError("OAuth token endpoint answered without an access_token") from exc
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != self._refresh_token:
            # Persist first: the old token stops working the moment this one exists.
            if self._on_rotate is not None:
                self._on_rotate(rotated)
            self._refresh_token = rotated
        self._access_token = str(access)
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        self._expires_at = self._clock() + lifetime
        self._margin = min(EXPIRY_MARGIN_S, lifetime * EXPIRY_MARGIN_SHARE)
        self.refreshes += 1

    def _refresh(self) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield self._token_request()
        self._accept(response)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        with self._lock:
            if self._needs_refresh():
                yield from self._refresh()
            token = self._access_token
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        # The token was revoked or expired early: refresh once and retry once.
        with self._lock:
            if self._access_token == token:
                yield from self._refresh()
            token = self._access_token
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

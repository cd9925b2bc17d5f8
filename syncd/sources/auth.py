"""Credentials as ``httpx.Auth``: static bearer tokens, and OAuth refresh-token grants.

Two OAuth flows share the token endpoint's rules. :class:`SharedOAuth` is
what a pass uses: the grant lives in a :class:`CredentialStore` (the
database), because any number of processes may use one grant at once and
DoorFlow revokes a refresh token the moment it rotates it. Before a refresh
a process takes the source's refresh lock, re-reads the stored grant, uses
an access token another process just obtained if it is still fresh, and
otherwise refreshes and saves the rotated token before releasing the lock or
using anything. :class:`OAuthRefresh` keeps the grant in memory only (a
connector built without a store: unit tests, tools).

OAuth (RFC 6749 refresh-token grant, as DoorFlow runs it): the access token is
refreshed shortly before it expires and once more when the server answers 401
anyway. Refresh tokens may rotate on use: a new one is persisted through
``on_rotate`` *before* it is used for anything, so a crash can never leave the
integration holding only a revoked token. When the server sends no new refresh
token, the old one is kept.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import httpx
import orjson
import structlog

from syncd.errors import AuthError, CredentialStoreError, ServerError

log = structlog.get_logger(__name__)

# Refresh this long before the server's stated expiry: clocks skew and a
# request can take a while to arrive.
EXPIRY_MARGIN_S = 60.0
EXPIRY_MARGIN_SHARE = 0.1  # ...but never more than this share of a short lifetime


def token_fingerprint(token: str) -> str:
    """What is stored to recognise a configured refresh token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def choose_refresh_token(
    configured: str | None, stored: str | None, stored_origin: str | None
) -> str | None:
    """The refresh token to use: the stored (rotated) one only if it descends from ``configured``.

    ``stored_origin`` is the fingerprint of the configured token the stored one
    was rotated from. A configured token that differs from it is a new
    authorization (after a revocation the user follows syncd's own advice and
    sets a new one): it wins over the stored one, which descends from a dead
    grant. A stored token without an origin was saved before syncd recorded
    one; it is the live token of the only grant syncd knew, so it is kept (the
    next rotation records its origin). Without a configured token (the grant
    came from ``syncd auth doorflow``) the stored one is the only one.
    """
    if configured is None:
        return stored
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


# -- the grant as shared state ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OAuthGrant:
    """A source's OAuth grant as stored: what every process sharing it reads.

    ``origin`` is the fingerprint of the configured refresh token the stored
    one descends from (:func:`choose_refresh_token`). ``access_until`` is the
    wall-clock time (Unix seconds) until which ``access_token`` may be used:
    the server's expiry less a safety margin.
    """

    refresh_token: str | None = None
    origin: str | None = None
    access_token: str | None = None
    access_until: float | None = None

    def __repr__(self) -> str:  # never a token in a repr, a traceback or a log
        return f"OAuthGrant(access_until={self.access_until!r})"


class CredentialStore(Protocol):
    """Where one source's grant lives, shared by every process that uses it.

    ``load`` reads without waiting for anyone. ``locked`` holds the source's
    refresh lock for the block (waiting for another holder) and yields the
    grant as stored once it is held; ``save`` commits a grant durably and is
    called inside ``locked``. Failures raise :class:`CredentialStoreError`.
    """

    def load(self) -> OAuthGrant: ...

    def locked(self) -> AbstractContextManager[OAuthGrant]: ...

    def save(self, grant: OAuthGrant) -> None: ...


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    """A token endpoint's 200: the access token, its lifetime, maybe a new refresh token."""

    access_token: str
    lifetime: float
    refresh_token: str | None


def refresh_request(
    token_url: str, client_id: str, client_secret: str, refresh_token: str
) -> httpx.Request:
    return httpx.Request(
        "POST",
        token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
            "client_secret": client_secret,
        },
        headers={"Accept": "application/json"},
    )


def token_error(response: httpx.Response) -> str | None:
    """The OAuth ``error`` code of a refused token request (``invalid_grant``, ...)."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) and error.isidentifier() else None


def parse_token_answer(response: httpx.Response, source: str) -> TokenAnswer:
    """The token endpoint's answer, or :class:`AuthError` naming the fix.

    A 5xx is the vendor's trouble, not the grant's: a :class:`ServerError`,
    retried like any other (the refresh token was not spent).
    """
    if response.status_code >= 500:
        raise ServerError(f"OAuth token endpoint answered HTTP {response.status_code}")
    if response.status_code != 200:
        code = token_error(response)
        said = f" ({code})" if code else ""
        raise AuthError(
            f"OAuth token refresh failed with HTTP {response.status_code}{said}; the refresh "
            f"token may be revoked: run `syncd auth doorflow --source {source}` "
            "(or set a new refresh token)"
        )
    try:
        body = orjson.loads(response.content)
        access = body["access_token"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise AuthError("OAuth token endpoint answered without an access_token") from exc
    rotated = body.get("refresh_token")
    expires_in = body.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
    return TokenAnswer(
        str(access), lifetime, rotated if isinstance(rotated, str) and rotated else None
    )


def usable_until(now: float, lifetime: float) -> float:
    """When to stop using an access token that lives ``lifetime`` seconds from ``now``."""
    return now + lifetime - min(EXPIRY_MARGIN_S, lifetime * EXPIRY_MARGIN_SHARE)


# Saving a rotated token is retried briefly in place: a one-shot command that
# gives up keeps the token only until it exits.
SAVE_WAITS_S = (0.25, 1.0)
# A test hook: seconds to hold the refresh lock before the token request, so
# a test can kill a process while it holds the lock. Never set in production.
HOLD_ENV = "SYNCD_TEST_REFRESH_HOLD_S"


class SharedOAuth(httpx.Auth):
    """Bearer tokens of a grant shared through a :class:`CredentialStore`.

    The store is the source of truth; this object keeps only the access
    token in use, and a rotated grant whose save failed (``unsaved``), which
    it saves before anything else on its next request. ``configured`` is the
    refresh token of the configuration, if any (:func:`choose_refresh_token`
    decides between it and the stored one). ``clock`` is wall-clock time:
    other processes read the stored expiry.
    """

    requires_response_body = True

    def __init__(
        self,
        *,
        source: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        configured: str | None,
        credentials: CredentialStore,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._source = source
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._configured = configured
        self._origin = None if configured is None else token_fingerprint(configured)
        self._credentials = credentials
        self._clock = clock
        self._sleep = sleep
        self._grant = OAuthGrant()
        self.unsaved: OAuthGrant | None = None
        self._rotated_from: str | None = None
        self._lock = threading.Lock()
        self.refreshes = 0
        # How long a request has been taking (decaying maximum, seconds): the
        # vendor checks the token when the request arrives, so a token must
        # outlive the request, not only be valid when it is sent.
        self._in_flight_s = 0.0

    def _fresh(self, grant: OAuthGrant) -> bool:
        return (
            grant.access_token is not None
            and grant.access_until is not None
            and self._clock() + self._in_flight_s < grant.access_until
        )

    def _took(self, seconds: float) -> None:
        # Halved by each quicker request: a vendor that recovers is trusted again soon.
        self._in_flight_s = max(seconds, self._in_flight_s / 2)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        with self._lock:
            token = yield from self._current_token()
        request.headers["Authorization"] = f"Bearer {token}"
        sent = self._clock()
        response = yield request
        self._took(self._clock() - sent)
        if response.status_code != 401:
            return
        # Revoked early, or another process refreshed and the vendor dropped
        # the old access token: the store may already hold the new one.
        with self._lock:
            token = yield from self._replacement(token)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def _current_token(self) -> Generator[httpx.Request, httpx.Response, str]:
        self.save_unsaved()
        if self._fresh(self._grant):
            return str(self._grant.access_token)
        stored = self._credentials.load()
        if self._fresh(stored):
            self._grant = stored
            return str(stored.access_token)
        return (yield from self._refresh(rejected=self._grant.access_token))

    def _replacement(self, rejected: str) -> Generator[httpx.Request, httpx.Response, str]:
        self.save_unsaved()
        stored = self._credentials.load()
        if self._fresh(stored) and stored.access_token != rejected:
            self._grant = stored
            return str(stored.access_token)
        return (yield from self._refresh(rejected=rejected))

    def _refresh(self, rejected: str | None) -> Generator[httpx.Request, httpx.Response, str]:
        with self._credentials.locked() as stored:
            # Whoever held the lock before us may have refreshed already.
            if self._fresh(stored) and stored.access_token != rejected:
                self._grant = stored
                return str(stored.access_token)
            refresh = choose_refresh_token(self._configured, stored.refresh_token, stored.origin)
            if refresh is None:
                raise AuthError(
                    f"source {self._source} has no OAuth refresh token: run "
                    f"`syncd auth doorflow --source {self._source}` (or set refresh_token_env)"
                )
            self._hold_for_tests()
            response = yield refresh_request(
                self._token_url, self._client_id, self._client_secret, refresh
            )
            response.read()
            answer = parse_token_answer(response, self._source)
            self.refreshes += 1
            grant = OAuthGrant(
                refresh_token=answer.refresh_token or refresh,
                origin=self._origin or stored.origin,
                access_token=answer.access_token,
                access_until=usable_until(self._clock(), answer.lifetime),
            )
            # Saved before use: the old refresh token stopped working the
            # moment this one was issued, for every process.
            self._save_or_keep(grant, rotated_from=refresh)
        self._grant = grant
        rotated = answer.refresh_token is not None
        log.info("oauth_token_refreshed", source=self._source, rotated=rotated)
        return grant.access_token or ""

    def _save_or_keep(self, grant: OAuthGrant, rotated_from: str) -> None:
        for wait in (*SAVE_WAITS_S, None):
            try:
                self._credentials.save(grant)
                return
            except CredentialStoreError as exc:
                if wait is None:
                    self.unsaved, self._rotated_from = grant, rotated_from
                    raise CredentialStoreError(
                        f"the rotated OAuth refresh token of {self._source} could not be "
                        f"saved ({exc}); it is kept and saved before the next request"
                    ) from None
                self._sleep(wait)

    def save_unsaved(self) -> None:
        """Save a rotated grant whose save failed, before anything else; raise if it fails again."""
        if self.unsaved is None:
            return
        with self._credentials.locked() as stored:
            if stored.refresh_token not in (self._rotated_from, self.unsaved.refresh_token):
                # A new authorization (``syncd auth doorflow``) replaced the
                # grant meanwhile: the stored one is the newer.
                log.warning("oauth_unsaved_token_superseded", source=self._source)
            else:
                try:
                    self._credentials.save(self.unsaved)
                except CredentialStoreError as exc:
                    raise CredentialStoreError(
                        f"the rotated OAuth refresh token of {self._source} is still not "
                        f"saved ({exc}); it is kept and saved before the next request"
                    ) from None
                self._grant = self.unsaved
                log.info("oauth_unsaved_token_saved", source=self._source)
            self.unsaved, self._rotated_from = None, None

    def _hold_for_tests(self) -> None:
        hold = os.environ.get(HOLD_ENV)
        if hold:
            log.info("oauth_refresh_lock_held", source=self._source, hold_s=float(hold))
            self._sleep(float(hold))

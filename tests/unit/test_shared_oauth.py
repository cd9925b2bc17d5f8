"""The OAuth grant as shared state: several "processes" (SharedOAuth objects, each
with its own HTTP client) on one real SQLite store, a token server that rotates
on every use and revokes the rotated-away refresh token (httpx.MockTransport),
and an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import sqlalchemy as sa

from syncd.db import migrate
from syncd.db.engine import create_engine
from syncd.db.store import Store, StoredCredentials
from syncd.errors import AuthError, CredentialStoreError
from syncd.sources.auth import SharedOAuth, token_fingerprint

TOKEN_URL = "http://df.test/oauth/token"


class TokenServer:
    """Doorkeeper-like: every refresh rotates; a spent refresh token is invalid_grant;
    an access token dies when a newer one is issued (``revoke_old_access``)."""

    def __init__(self, refresh: str = "r0", revoke_old_access: bool = False) -> None:
        self.live_refresh = {refresh}
        self.live_access: set[str] = set()
        self.n = 0
        self.token_requests = 0
        self.invalid_grant = 0
        self.revoke_old_access = revoke_old_access
        self.data_requests: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            self.token_requests += 1
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            if form["refresh_token"] not in self.live_refresh:
                self.invalid_grant += 1
                return httpx.Response(400, json={"error": "invalid_grant"})
            self.live_refresh.discard(form["refresh_token"])
            self.n += 1
            access, refresh = f"a{self.n}", f"r{self.n}"
            self.live_refresh.add(refresh)
            if self.revoke_old_access:
                self.live_access.clear()
            self.live_access.add(access)
            return httpx.Response(
                200, json={"access_token": access, "refresh_token": refresh, "expires_in": 100}
            )
        token = request.headers["Authorization"].removeprefix("Bearer ")
        self.data_requests.append(token)
        if token not in self.live_access:
            return httpx.Response(401, json={"error": "invalid_token"})
        return httpx.Response(200, json=[])


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = create_engine(f"sqlite:///{tmp_path}/syncd.db")
    migrate.upgrade(engine)
    yield Store(engine)
    engine.dispose()


def process(
    store: Store, server: TokenServer, clock: Clock, configured: str | None = "r0"
) -> tuple[httpx.Client, SharedOAuth]:
    auth = SharedOAuth(
        source="hq",
        token_url=TOKEN_URL,
        client_id="cid",
        client_secret="cs",
        configured=configured,
        credentials=StoredCredentials(store, "hq"),
        clock=clock,
        sleep=lambda _s: None,
    )
    client = httpx.Client(transport=httpx.MockTransport(server.handler), auth=auth)
    return client, auth


def get(client: httpx.Client) -> int:
    return client.get("http://df.test/api/3/events").status_code


def test_a_second_process_uses_the_first_ones_access_token_then_its_rotated_refresh_token(
    store: Store,
) -> None:
    server, clock = TokenServer(), Clock()
    (a, auth_a), (b, auth_b) = process(store, server, clock), process(store, server, clock)
    assert get(a) == 200
    assert get(b) == 200
    assert (auth_a.refreshes, auth_b.refreshes) == (1, 0)  # B took A's access token
    clock.now += 200  # both expired
    assert get(b) == 200  # B refreshes with the token A's refresh rotated to
    assert get(a) == 200  # and A takes B's new access token
    assert (auth_a.refreshes, auth_b.refreshes) == (1, 1)
    assert server.invalid_grant == 0
    grant = store.load_grant("hq")
    assert grant.refresh_token == "r2"
    assert grant.origin == token_fingerprint("r0")


def test_memory_only_tokens_would_collide(store: Store) -> None:
    """The bug this replaces: two in-memory grants, one refresh revokes the other's token."""
    from syncd.sources.auth import OAuthRefresh

    server, clock = TokenServer(), Clock()
    clients = [
        httpx.Client(
            transport=httpx.MockTransport(server.handler),
            auth=OAuthRefresh(TOKEN_URL, "cid", "cs", "r0", clock=clock),
        )
        for _ in range(2)
    ]
    get(clients[0])
    with pytest.raises(AuthError):
        get(clients[1])
    assert server.invalid_grant == 1


def test_a_401_with_a_fresh_looking_token_rereads_the_store_before_refreshing(
    store: Store,
) -> None:
    server, clock = TokenServer(revoke_old_access=True), Clock()
    (a, auth_a), (b, auth_b) = process(store, server, clock), process(store, server, clock)
    assert get(a) == 200
    # B's clock says A's token is stale (skew): B refreshes; the vendor drops a1.
    clock.now += 95
    assert get(b) == 200
    clock.now -= 95
    assert get(a) == 200  # 401 on a1, then a2 from the store: no refresh by A
    assert (auth_a.refreshes, auth_b.refreshes) == (1, 1)
    assert server.data_requests == ["a1", "a2", "a1", "a2"]
    assert server.invalid_grant == 0


def test_a_newly_configured_token_wins_over_a_stored_one_of_an_older_grant(
    store: Store,
) -> None:
    server, clock = TokenServer(refresh="new-grant"), Clock()
    from syncd.sources.auth import OAuthGrant

    credentials = StoredCredentials(store, "hq")
    with credentials.locked():
        credentials.save(OAuthGrant("rotated-old", token_fingerprint("old-grant")))
    client, _ = process(store, server, clock, configured="new-grant")
    assert get(client) == 200
    assert store.load_grant("hq").origin == token_fingerprint("new-grant")


def test_no_refresh_token_anywhere_names_the_command(store: Store) -> None:
    client, _ = process(store, TokenServer(), Clock(), configured=None)
    with pytest.raises(AuthError, match=r"run `syncd auth doorflow --source hq`"):
        get(client)


def _refuse_token_writes(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TRIGGER refuse_tokens BEFORE UPDATE OF refresh_token ON sync_state "
                "BEGIN SELECT RAISE(ABORT, 'token writes refused'); END"
            )
        )


def _allow_token_writes(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER refuse_tokens"))


def test_a_rotated_token_whose_save_fails_is_kept_and_saved_before_anything_else(
    store: Store,
) -> None:
    server, clock = TokenServer(), Clock()
    client, auth = process(store, server, clock)
    assert get(client) == 200  # r1 stored (an insert: the row is new)
    clock.now += 200
    _refuse_token_writes(store)
    with pytest.raises(CredentialStoreError) as failed:
        get(client)
    message = str(failed.value)
    assert "could not be saved" in message
    assert "token writes refused" in message
    for secret in ("r1", "r2", "a2"):
        assert secret not in message.replace("refused", "")
    assert failed.value.__cause__ is None
    assert auth.unsaved is not None
    assert auth.unsaved.refresh_token == "r2"
    with pytest.raises(CredentialStoreError, match="still not saved"):
        get(client)  # still refused: no request at all went out
    assert server.token_requests == 2
    _allow_token_writes(store)
    assert get(client) == 200  # saved first, then a2 used: no new refresh
    assert server.token_requests == 2
    assert store.load_grant("hq").refresh_token == "r2"
    # Another process now carries on from r2 without invalid_grant.
    clock.now += 200
    other, _ = process(store, server, clock)
    assert get(other) == 200
    assert server.invalid_grant == 0


def test_the_refresh_lock_serializes_holders(store: Store) -> None:
    import threading
    import time

    order: list[str] = []

    def hold(name: str) -> None:
        with store.refresh_lock("hq"):
            order.append(f"{name} in")
            time.sleep(0.2)
            order.append(f"{name} out")

    threads = [threading.Thread(target=hold, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert order == ["x in", "x out", "y in", "y out"]
    with store.refresh_lock("hq"), pytest.raises(CredentialStoreError, match="held"):  # noqa: SIM117
        with Store(store.engine).refresh_lock("hq", timeout=0.2):
            pass


def test_a_failed_statement_never_shows_its_parameters(store: Store) -> None:
    from datetime import UTC, datetime

    from syncd.engine import describe_error

    now = datetime(2026, 12, 7, tzinfo=UTC)
    secret = "-".join(["dfr", "PARAM", "SECRET"])
    store.save_refresh_token("hq", "first", now)
    _refuse_token_writes(store)
    with pytest.raises(sa.exc.SQLAlchemyError) as failed:
        store.save_refresh_token("hq", secret, now)
    assert "token writes refused" in describe_error(failed.value)
    assert secret not in describe_error(failed.value)
    assert secret not in str(failed.value)  # hide_parameters: not even in its own text


def test_a_5xx_from_the_token_endpoint_is_transient(store: Store) -> None:
    from syncd.errors import ServerError

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": "unavailable"})

    auth = SharedOAuth(
        source="hq",
        token_url=TOKEN_URL,
        client_id="cid",
        client_secret="cs",
        configured="r0",
        credentials=StoredCredentials(store, "hq"),
    )
    with (
        httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client,
        pytest.raises(ServerError),
    ):
        get(client)


class SlowTokenServer(TokenServer):
    """Every data request takes ``latency`` (on the injected clock) before the
    vendor checks its access token; access tokens expire 100 s after issue."""

    def __init__(self, clock: Clock, latency: float) -> None:
        super().__init__()
        self.clock, self.latency = clock, latency
        self.expires: dict[str, float] = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            response = super().handler(request)
            if response.status_code == 200:
                self.expires[f"a{self.n}"] = self.clock.now + 100
            return response
        self.clock.now += self.latency  # the request arrives
        token = request.headers["Authorization"].removeprefix("Bearer ")
        self.data_requests.append(token)
        if self.clock.now >= self.expires.get(token, 0.0):
            return httpx.Response(401, json={"error": "invalid_token"})
        return httpx.Response(200, json=[])


def test_a_token_must_outlive_the_request_not_only_be_valid_when_sent(store: Store) -> None:
    """A slow vendor (60 s a request, tokens living 100 s): a process does not send
    a token that will have expired when its request arrives, although it is
    valid now. Without that, A sends its own a1 at t=85 (valid until 90 by its
    margin), gets a 401 at 145, takes B's a2 from the store (valid until 185 by
    its margin, 195 at the vendor) and gets a second 401 at 205: the pass fails."""
    clock = Clock()
    clock.now = 0.0
    server = SlowTokenServer(clock, latency=60)
    (a, _auth_a), (b, _auth_b) = process(store, server, clock), process(store, server, clock)
    assert get(a) == 200  # a1 issued at 0; A learns a request takes 60 s
    clock.now = 95
    assert get(b) == 200  # a1 stale for B: a2 issued at 95 (expires 195)
    clock.now = 85
    assert get(a) == 200  # a1 would arrive at 145, expired: A sends a2
    assert server.invalid_grant == 0

"""The DoorFlow simulator's authorization-code grant (PKCE S256) and token info."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx

from syncd.simulators import DoorFlowSimulator, SimClock
from syncd.simulators.doorflow import CODE_LIFETIME_S, pkce_challenge

REDIRECT = "http://127.0.0.1:8765/callback"


def _code(http: httpx.Client, sim: DoorFlowSimulator, verifier: str, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": sim.oauth.client_id,
        "redirect_uri": REDIRECT,
        "scope": "account.event.access.readonly",
        "state": "st-1",
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
        **extra,
    }
    r = http.get("/oauth/authorize", params=params)
    assert r.status_code == 302, r.text
    location = r.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["st-1"]
    return query["code"][0]


def _exchange(
    http: httpx.Client, sim: DoorFlowSimulator, code: str, verifier: str, redirect: str = REDIRECT
) -> httpx.Response:
    return http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "code_verifier": verifier,
            "client_id": sim.oauth.client_id,
            "client_secret": sim.oauth.client_secret,
        },
    )


def test_code_grant_with_pkce_then_token_info(clock: SimClock) -> None:
    with (
        DoorFlowSimulator(seed=3, history=5, clock=clock, token_expiry=120) as sim,
        httpx.Client(base_url=sim.base_url) as http,
    ):
        verifier = "v" * 50
        code = _code(http, sim, verifier)
        r = _exchange(http, sim, code, verifier)
        assert r.status_code == 200, r.text
        grant = r.json()
        assert {"access_token", "refresh_token", "expires_in"} <= set(grant)
        assert _exchange(http, sim, code, verifier).json()["error"] == "invalid_grant"  # reused
        info = http.get(
            "/oauth/token/info", headers={"Authorization": f"Bearer {grant['access_token']}"}
        )
        assert info.status_code == 200
        assert info.json()["scope"] == ["account.event.access.readonly"]
        assert info.json()["expires_in"] == 120
        assert info.json()["account_id"] == sim.account_id
        assert http.get("/oauth/token/info").status_code == 401
        # The refresh token rotates; the new tokens keep the granted scope.
        refreshed = http.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": grant["refresh_token"],
                "client_id": sim.oauth.client_id,
                "client_secret": sim.oauth.client_secret,
            },
        ).json()
        info = http.get(
            "/oauth/token/info", headers={"Authorization": f"Bearer {refreshed['access_token']}"}
        )
        assert info.json()["scope"] == ["account.event.access.readonly"]
        # A narrower grant says so.
        narrow_code = _code(http, sim, verifier, scope="account.person.readonly")
        narrow = _exchange(http, sim, narrow_code, verifier).json()
        info = http.get(
            "/oauth/token/info", headers={"Authorization": f"Bearer {narrow['access_token']}"}
        )
        assert info.json()["scope"] == ["account.person.readonly"]


def test_code_grant_refusals(clock: SimClock) -> None:
    with (
        DoorFlowSimulator(seed=3, history=5, clock=clock) as sim,
        httpx.Client(base_url=sim.base_url) as http,
    ):
        verifier = "w" * 50
        wrong_verifier = _exchange(http, sim, _code(http, sim, verifier), "x" * 50)
        assert wrong_verifier.json()["error"] == "invalid_grant"
        wrong_redirect = _exchange(
            http, sim, _code(http, sim, verifier), verifier, "http://127.0.0.1:1/callback"
        )
        assert wrong_redirect.json()["error"] == "invalid_grant"
        expired = _code(http, sim, verifier)
        clock.advance(CODE_LIFETIME_S + 1)
        assert _exchange(http, sim, expired, verifier).json()["error"] == "invalid_grant"
        assert sim.stats["invalid_grant"] == 3
        no_pkce = http.get(
            "/oauth/authorize",
            params={"response_type": "code", "client_id": sim.oauth.client_id,
                    "redirect_uri": REDIRECT},
        )  # fmt: skip
        assert no_pkce.status_code == 400
        unknown = http.get("/oauth/authorize", params={"client_id": "nobody"})
        assert unknown.status_code == 400

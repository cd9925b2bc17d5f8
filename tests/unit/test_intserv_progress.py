"""What a cut IntServ pass has proved survives a refused continuation key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from syncd.sources.intserv import IntServCursor, PassState, after_page, earned, restart_pass

T0 = datetime(2024, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)


def cursor_in_pass(horizon: datetime | None, read_to: datetime | None) -> IntServCursor:
    current = PassState(T0, continuation_key="k", horizon=horizon, read_to=read_to)
    return IntServCursor(least_sync_time=T0, current=current)


def test_a_restart_keeps_the_lesser_of_horizon_and_read_to() -> None:
    restarted = restart_pass(cursor_in_pass(T0 + 5 * H, T0 + 3 * H))
    assert restarted.least_sync_time == T0 + 3 * H
    assert restarted.current == PassState(T0 + 3 * H)
    restarted = restart_pass(cursor_in_pass(T0 + 2 * H, T0 + 3 * H))  # a system held it back
    assert restarted.least_sync_time == T0 + 2 * H


def test_nothing_proved_restarts_from_from_date() -> None:
    for horizon, read_to in ((None, T0 + H), (T0 + H, None), (T0 - H, T0 + H)):
        restarted = restart_pass(cursor_in_pass(horizon, read_to))
        assert restarted.least_sync_time == T0
        assert restarted.current == PassState(T0)


def test_read_to_is_the_newest_event_time_read_and_survives_storage() -> None:
    state = IntServCursor(least_sync_time=T0, current=PassState(T0))
    state = after_page(state, T0 + 9 * H, True, "k1", T0 + 2 * H)
    state = after_page(state, T0 + 9 * H, True, "k2", None)  # a page with no readable time
    state = after_page(state, T0 + 9 * H, True, "k3", T0 + 4 * H)
    assert state.current is not None
    assert state.current.read_to == T0 + 4 * H
    assert earned(state.current) == T0 + 4 * H
    assert IntServCursor.from_json(state.to_json(), T0) == state

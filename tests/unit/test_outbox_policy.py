"""The outbox policy alone (tui_chat/core/outbox.py): no engine, no store, no server.

Every decision is fed a time (``now`` in monotonic seconds, ``now_ms`` in wall-clock
milliseconds) instead of reading a clock, so these tests are exact and instant.
"""

from __future__ import annotations

import math

import pytest

from tui_chat.core.models import OutState
from tui_chat.core.outbox import MAX_RETRY_DELAY, Outbox, human_duration
from tui_chat.core.store import OutboxRow

T0_MS = 1_700_000_000_000
WINDOW = 300.0  # seconds, the default freshness window


def row(
    cid: str,
    peer: str = "bob",
    *,
    ord: int | None = None,
    state: OutState = OutState.PENDING,
    fresh_since: int = T0_MS,
    attempts: int = 0,
) -> OutboxRow:
    return OutboxRow(
        cid,
        peer,
        f"body of {cid}",
        created_at=fresh_since,
        ord=ord if ord is not None else int(cid.lstrip("abcdefghijklmnopqrstuvwxyz-") or 0),
        attempts=attempts,
        state=state,
        fresh_since=fresh_since,
    )


def ids(rows: list[OutboxRow]) -> list[str]:
    return [r.client_id for r in rows]


# ---------------------------------------------------------------- expiry


def test_expire_on_start_fails_only_pending_rows_older_than_the_window() -> None:
    stale = row("m1", fresh_since=T0_MS)
    fresh = row("m2", fresh_since=T0_MS + 200_000)
    failed = row("m3", fresh_since=T0_MS, state=OutState.FAILED)
    box = Outbox([stale, fresh, failed])
    now_ms = T0_MS + int(WINDOW * 1000) + 1

    expired = box.expire_on_start(now_ms, WINDOW)

    assert expired == [stale]
    assert stale.state is OutState.FAILED and stale.retryable
    assert stale.error == "not sent before the app closed, and older than 5 min"
    assert fresh.state is OutState.PENDING and fresh.error is None
    assert failed.error is None  # already failed: not touched again
    assert len(box) == 3  # expired rows stay open (failed, retryable)


def test_expire_on_start_keeps_a_row_exactly_at_the_window() -> None:
    r = row("m1")
    assert Outbox([r]).expire_on_start(T0_MS + int(WINDOW * 1000), WINDOW) == []
    assert r.state is OutState.PENDING


def test_expire_hands_over_stale_rows_and_says_when_the_next_one_expires() -> None:
    stale = row("m1", fresh_since=T0_MS)
    later = row("m2", fresh_since=T0_MS + 10_000)
    latest = row("m3", fresh_since=T0_MS + 20_000)
    failed = row("m4", fresh_since=T0_MS, state=OutState.FAILED)
    box = Outbox([stale, later, latest, failed])
    seen: list[tuple[str, str]] = []

    wait = box.expire(T0_MS + 4_000, 3.0, lambda r, why: seen.append((r.client_id, why)))

    assert seen == [("m1", "not delivered within 3 s")]
    # m2 is 6 s from its deadline (plus the policy's 10 ms slack); m3 later still.
    assert wait == pytest.approx(9.0 + 0.01)


def test_expire_with_nothing_pending_waits_forever() -> None:
    box = Outbox([row("m1", state=OutState.FAILED)])
    assert box.expire(T0_MS + 10**9, 1.0, lambda r, why: pytest.fail("nothing may expire")) == (
        math.inf
    )


def test_a_retry_starts_a_fresh_window() -> None:
    r = row("m1", state=OutState.FAILED)
    box = Outbox([r])
    box.not_before["m1"] = 99.0
    now_ms = T0_MS + 10**7
    assert box.retry(r, now_ms)
    assert (r.state, r.error, r.fresh_since) == (OutState.PENDING, None, now_ms)
    assert "m1" not in box.not_before
    assert box.expire(now_ms + 1000, WINDOW, lambda r, why: pytest.fail(why)) < WINDOW
    assert not box.retry(r, now_ms)  # only a failed row can be retried


@pytest.mark.parametrize(
    ("seconds", "shown"), [(300.0, "5 min"), (120.0, "2 min"), (90.0, "90 s"), (2.5, "2.5 s")]
)
def test_human_duration(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


# ---------------------------------------------------------------- holding behind a failure


def test_refresh_held_holds_what_comes_after_a_failed_row_of_the_same_peer() -> None:
    first = row("m1")
    failed = row("m2", state=OutState.FAILED)
    after = row("m3")
    after2 = row("m4")
    other = row("m5", peer="carol")
    box = Outbox([after2, other, failed, after, first])

    changed = box.refresh_held("bob", hold=True)

    assert changed == {"m3", "m4"}
    assert box.held == {"m3", "m4"}
    assert not box.is_held("m1") and not box.is_held("m5")
    # Nothing changed since: the next refresh reports nothing.
    assert box.refresh_held("bob", hold=True) == set()


def test_refresh_held_releases_when_the_failure_is_retried_or_hold_is_off() -> None:
    failed = row("m1", state=OutState.FAILED)
    box = Outbox(
        [failed, row("m2"), row("m3", peer="carol", state=OutState.FAILED), row("m4", peer="carol")]
    )
    box.refresh_held("bob", hold=True)
    box.refresh_held("carol", hold=True)
    assert box.held == {"m2", "m4"}

    box.retry(failed, T0_MS)
    assert box.refresh_held("bob", hold=True) == {"m2"}
    assert box.held == {"m4"}  # carol's hold is untouched by bob's refresh

    assert box.refresh_held("carol", hold=False) == {"m4"}
    assert box.held == set()


# ---------------------------------------------------------------- what goes on the wire


def test_ready_picks_one_per_peer_in_compose_order() -> None:
    box = Outbox([row("m3"), row("m1"), row("m2", peer="carol"), row("m4", peer="carol")])

    chosen, wait = box.ready(100.0)

    assert ids(chosen) == ["m1", "m2"]  # the oldest of each peer; the rest wait for their ack
    assert box.inflight == {"m1": 100.0, "m2": 100.0}
    assert [box.rows[c].attempts for c in ("m1", "m2", "m3", "m4")] == [1, 1, 0, 0]
    assert wait == 1.0
    # A second round while both are in flight picks nothing.
    assert box.ready(100.5) == ([], 1.0)


def test_the_next_is_ready_once_the_first_is_confirmed() -> None:
    first, second = row("m1"), row("m2")
    box = Outbox([first, second])
    assert ids(box.ready(1.0)[0]) == ["m1"]
    box.confirm(first, "c1", 7)
    assert (first.state, first.conv, first.seq) == (OutState.SENT, "c1", 7)
    assert "m1" not in box and "m1" not in box.inflight
    assert ids(box.ready(2.0)[0]) == ["m2"]


def test_a_held_row_blocks_its_peer_but_not_others() -> None:
    box = Outbox([row("m1", state=OutState.FAILED), row("m2"), row("m3"), row("m4", peer="carol")])
    box.refresh_held("bob", hold=True)
    assert ids(box.ready(0.0)[0]) == ["m4"]
    # Without holding ("continue"), bob's later messages go past the failed one, in order.
    box.refresh_held("bob", hold=False)
    assert ids(box.ready(0.0)[0]) == ["m2"]


def test_not_before_holds_a_deferred_row_and_everything_after_it() -> None:
    deferred, after = row("m1", attempts=1), row("m2")
    box = Outbox([deferred, after, row("m3", peer="carol")])
    box.defer(deferred, "slow down", retry_after=2.0, now=10.0)
    assert deferred.error == "slow down"

    chosen, wait = box.ready(11.0)

    assert ids(chosen) == ["m3"]  # m2 does not overtake m1
    assert wait == pytest.approx(1.0)  # look again when m1 may go
    assert ids(box.ready(12.0)[0]) == ["m1"]


def test_a_session_end_clears_what_was_in_flight() -> None:
    box = Outbox([row("m1"), row("m2", peer="carol")])
    box.ready(0.0)
    assert box.oldest_inflight() == 0.0
    box.clear_inflight()
    assert box.inflight == {} and box.oldest_inflight() is None
    # The next session sends them again (a resend: the second attempt).
    assert ids(box.ready(5.0)[0]) == ["m1", "m2"]
    assert box.rows["m1"].attempts == 2


def test_failed_and_given_up_rows_are_not_sent() -> None:
    given = row("m2")
    box = Outbox([row("m1", state=OutState.FAILED), given])
    assert box.give_up(given) is False  # never sent: given up at once
    assert given.state is OutState.GIVEN_UP and "m2" not in box
    assert box.ready(0.0)[0] == []


# ---------------------------------------------------------------- give-up, cancel, undo


def test_a_message_that_may_have_reached_the_server_is_cancelling_not_given_up() -> None:
    sent = row("m1")
    box = Outbox([sent, row("m2")])
    box.ready(0.0)  # m1 goes out
    assert box.give_up(sent) is True
    assert sent.state is OutState.CANCELLING and "m1" in box
    # Its fate decides what follows: nothing else to that peer goes out meanwhile.
    box.forget_inflight("m1")
    assert box.ready(1.0)[0] == []


def test_cancels_go_out_once_per_session_and_then_no_undo() -> None:
    sent = row("m1", attempts=1)
    box = Outbox([sent])
    box.give_up(sent)
    assert box.can_undo(sent)  # the server has not been told yet
    assert ids(box.cancels_due(3.0)) == ["m1"]
    assert box.cancels_due(3.5) == []  # asked once in this session
    assert not box.can_undo(sent)
    box.clear_inflight()
    assert ids(box.cancels_due(9.0)) == ["m1"]  # asked again in the next session
    box.given_up(sent)  # the server confirmed the tombstone
    assert sent.state is OutState.GIVEN_UP and "m1" not in box


def test_undo_puts_the_message_back_as_failed() -> None:
    r = row("m1", attempts=1)
    box = Outbox([r])
    box.give_up(r)
    box.undo_give_up(r)
    assert (r.state, r.retryable) == (OutState.FAILED, True)
    assert r.error == "given up, then restored"
    assert "m1" in box and box.failed_ids() == ["m1"]


def test_a_cancelling_row_loaded_at_start_may_have_been_told() -> None:
    r = row("m1", state=OutState.CANCELLING, attempts=1)
    assert not Outbox([r]).can_undo(r)


def test_a_cancelling_row_holds_its_peer_until_its_fate_is_known() -> None:
    sent_once, later, other = row("m1", attempts=1), row("m2"), row("m3", peer="carol")
    box = Outbox([sent_once, later, other])
    assert box.give_up(sent_once) is True  # it may have reached the server
    assert sent_once.state is OutState.CANCELLING and "m1" in box
    assert ids(box.ready(0.0)[0]) == ["m3"]
    assert [r.client_id for r in box.cancels_due(0.0)] == ["m1"]
    assert box.cancels_due(0.0) == []  # once per session
    assert not box.can_undo(sent_once)  # the server has been told
    box.given_up(sent_once)
    box.confirm(other, "c2", 1)
    assert ids(box.ready(1.0)[0]) == ["m2"]


def test_a_row_that_never_left_is_given_up_at_once_and_can_be_restored() -> None:
    never = row("m1")
    box = Outbox([never])
    assert box.give_up(never) is False
    assert never.state is OutState.GIVEN_UP and "m1" not in box
    assert box.can_undo(never)
    box.undo_give_up(never)
    assert never.state is OutState.FAILED and "m1" in box


# ---------------------------------------------------------------- defer backoff and rejects


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [
        (0, 0.5),
        (1, 1.0),
        (2, 2.0),
        (3, 4.0),
        (5, 16.0),
        (6, MAX_RETRY_DELAY),
        (50, MAX_RETRY_DELAY),
    ],
)
def test_defer_without_retry_after_backs_off_exponentially_up_to_the_cap(
    attempts: int, delay: float
) -> None:
    r = row("m1", attempts=attempts)
    box = Outbox([r])
    box.defer(r, "busy", retry_after=None, now=100.0)
    assert box.not_before["m1"] == pytest.approx(100.0 + delay)


def test_defer_honours_the_servers_retry_after() -> None:
    r = row("m1", attempts=6)
    box = Outbox([r])
    box.defer(r, "rate", retry_after=0.25, now=5.0)
    assert box.not_before["m1"] == 5.25


def test_take_rejected_ends_the_attempt_only_for_an_open_pending_row() -> None:
    pending, failed = row("m1"), row("m2", state=OutState.FAILED)
    box = Outbox([pending, failed])
    box.inflight.update({"m1": 1.0, "m2": 1.0, "gone": 1.0})
    assert box.take_rejected("m1") is pending
    assert box.take_rejected("m2") is None
    assert box.take_rejected("gone") is None
    assert box.inflight == {}


def test_fail_records_the_reason_and_drops_the_resend_time() -> None:
    r = row("m1")
    box = Outbox([r])
    box.not_before["m1"] = 3.0
    box.fail(r, "too long", retryable=False)
    assert (r.state, r.error, r.retryable) == (OutState.FAILED, "too long", False)
    assert box.failed_ids() == [] and "m1" not in box.not_before  # retry_all leaves it


# ---------------------------------------------------------------- acks


def test_overdue_ack_names_the_first_late_message() -> None:
    box = Outbox([row("m1"), row("m2", peer="carol")])
    box.inflight.update({"m1": 10.0, "m2": 12.0})
    assert box.overdue_ack(13.0, ack_timeout=5.0) == (None, pytest.approx(2.01))
    late, _ = box.overdue_ack(15.5, ack_timeout=5.0)
    assert late == "m1"
    box.forget_inflight("m1")
    assert box.overdue_ack(15.5, ack_timeout=5.0) == (None, pytest.approx(1.51))
    assert box.overdue_ack(17.5, ack_timeout=5.0)[0] == "m2"


def test_overdue_ack_with_nothing_in_flight() -> None:
    assert Outbox([row("m1")]).overdue_ack(1e9, ack_timeout=0.1) == (None, math.inf)


def test_queries_see_the_open_rows_in_compose_order() -> None:
    rows = [row("m3"), row("m1", peer="carol"), row("m2")]
    box = Outbox(rows)
    assert [r.client_id for r in box.ordered()] == ["m1", "m2", "m3"]
    assert [r.client_id for r in box.of_peer("bob")] == ["m2", "m3"]
    assert box.peers() == {"bob", "carol"}
    assert box.get("m2") is rows[2] and box.get("nope") is None
    assert box.pop("m1") is rows[1] and box.pop("m1") is None
    assert len(box) == 2 and "m1" not in box


def test_retry_all_leaves_what_the_server_refused_for_good() -> None:
    again, refused = row("m1", state=OutState.FAILED), row("m2", state=OutState.FAILED)
    refused.retryable = False
    box = Outbox([again, refused])
    assert box.failed_ids() == ["m1"]

"""The sync core, fed frames with no server and no socket (as websockets tests its protocol).

A real local store in a temp dir, a fake clock, and frames built by hand: each test
says what the core must queue to send, store and announce for what it was fed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_chat import protocol as p
from tui_chat.core.config import SyncSection
from tui_chat.core.models import (
    DeliveredAnyway,
    EpochReset,
    Event,
    GapUnfillable,
    MessageAdded,
    MessageChanged,
    OutState,
    Synced,
)
from tui_chat.core.outbox import Outbox
from tui_chat.core.replica import Replica
from tui_chat.core.store import LocalStore, OutboxRow
from tui_chat.core.sync import GAP_TRIES, SyncCore
from tui_chat.core.transport import SILENCE_AFTER, Retry

CONV = "c1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A sync core over a real store, with what it emitted and queued laid out."""

    def __init__(self, tmp: Path, **settings: float) -> None:
        self.store = LocalStore(tmp / "alice.db", "alice")
        self.outbox = Outbox(self.store.open_outbox())
        self.events: list[Event] = []
        self.replica = Replica(self.store, self.outbox, self.events.append, hold=True)
        self.clock = Clock()
        self.silences: list[float | None] = []
        self.onlines = 0
        self.core = SyncCore(
            self.replica,
            SyncSection(**settings),  # type: ignore[arg-type]
            on_online=self._online,
            on_silence=self.silences.append,
            clock=self.clock,
            wall=lambda: int(self.clock.now * 1000),
        )

    def _online(self) -> None:
        self.onlines += 1

    def login(self, epoch: str = "e1") -> None:
        welcome = p.Welcome(v=1, user="alice", epoch=epoch, server_time=0, max_body=1234)
        assert self.core.on_welcome(welcome) is None
        assert self.core.on_frame(p.Synced(cursors=self.store.watermarks())) is None

    def take(self) -> list[p.ClientFrame]:
        out, self.core.out = self.core.out, []
        return out

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    def write(self, body: str, peer: str = "bob") -> OutboxRow:
        row = OutboxRow(f"m{len(self.outbox) + 1}", peer, body, 0, self.store.next_ord())
        row.fresh_since = int(self.clock.now * 1000)
        self.replica.add(row)
        return row

    def give_up(self, row: OutboxRow) -> None:
        # What Engine.give_up does.
        self.outbox.give_up(row)
        self.replica.save(row)


def msg(seq: int, sender: str = "bob", to: str = "alice", cid: str | None = None) -> p.Message:
    return p.Message(
        conv=CONV,
        seq=seq,
        sender=sender,
        to=to,
        client_id=cid or f"{sender}-{seq}",
        body=f"body {seq}",
        ts=seq,
    )


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    r = Rig(tmp_path)
    yield r
    r.store.close()


def test_in_order_messages_are_stored_announced_once_and_advance_the_watermark(rig: Rig) -> None:
    rig.login()
    for seq in (1, 2, 3, 2):
        rig.core.on_frame(msg(seq))
    assert rig.store.watermark(CONV) == 3
    assert [e.message.seq for e in rig.of(MessageAdded)] == [1, 2, 3]
    assert rig.take() == []
    assert rig.core.max_body == 1234 and rig.onlines == 1
    assert rig.of(Synced) == [Synced(applied=0)]


def test_a_gap_is_fetched_exactly_and_filled(rig: Rig) -> None:
    rig.login()
    rig.core.on_frame(msg(1))
    rig.core.on_frame(msg(5))
    assert rig.take() == [p.HistoryRequest(conv=CONV, before=5, after=1, limit=500)]
    rig.core.on_frame(msg(6))
    assert rig.take() == []  # one request per gap, not one per message above it
    page = p.HistoryPage(conv=CONV, messages=[msg(2), msg(3), msg(4)], complete=False, after=1)
    rig.core.on_frame(page)
    assert rig.store.watermark(CONV) == 6
    assert sorted(e.message.seq for e in rig.of(MessageAdded)) == [1, 2, 3, 4, 5, 6]
    _wait, end = rig.core.poll()
    assert end is None and rig.take() == []


def test_an_empty_gap_page_backs_off_then_is_called_unfillable(rig: Rig) -> None:
    rig.login()
    rig.core.on_frame(msg(1))
    rig.core.on_frame(msg(4))
    asked = 0
    for _ in range(50):  # far more rounds than the core may ask
        frames = rig.take()
        asked += len(frames)
        for f in frames:
            assert isinstance(f, p.HistoryRequest) and f.after == 1
            # A buggy or hostile server: "complete", and nothing in it.
            rig.core.on_frame(p.HistoryPage(conv=CONV, messages=[], complete=True, after=1))
        assert rig.take() == []  # never asked again at once
        rig.clock.now += 0.3
        rig.core.poll()
    assert asked == GAP_TRIES
    [unfillable] = rig.of(GapUnfillable)
    assert (unfillable.peer, unfillable.conv, unfillable.after, unfillable.before) == (
        "bob",
        CONV,
        1,
        4,
    )
    assert rig.store.watermark(CONV) == 1


def test_ack_confirms_once_and_the_echo_changes_nothing(rig: Rig) -> None:
    rig.login()
    row = rig.write("hi")
    rig.core.poll()
    assert rig.take() == [p.Send(client_id=row.client_id, to="bob", body="hi")]
    assert rig.core.commit_before_send  # a first transmission: committed before it leaves
    rig.core.on_frame(p.Ack(client_id=row.client_id, conv=CONV, seq=1, ts=7))
    assert row.state is OutState.SENT and len(rig.outbox) == 0
    rig.core.on_frame(msg(1, sender="alice", to="bob", cid=row.client_id))
    changed = [e.message.state for e in rig.of(MessageChanged)]
    assert changed == [OutState.SENT]
    assert [e.message.own for e in rig.of(MessageAdded)] == [True]  # the compose only
    assert rig.store.message_view(CONV, 1).body == "hi"  # type: ignore[union-attr]


def test_one_message_in_flight_per_peer_keeps_order(rig: Rig) -> None:
    rig.login()
    a, b = rig.write("a"), rig.write("b")
    rig.core.poll()
    assert [f.client_id for f in rig.take()] == [a.client_id]  # type: ignore[union-attr]
    rig.core.on_frame(p.Ack(client_id=a.client_id, conv=CONV, seq=1, ts=1))
    rig.core.poll()
    assert [f.client_id for f in rig.take()] == [b.client_id]  # type: ignore[union-attr]


def test_a_message_that_never_left_is_given_up_at_once_and_never_sent(rig: Rig) -> None:
    row = rig.write("never mind")
    rig.give_up(row)
    assert row.state is OutState.GIVEN_UP and len(rig.outbox) == 0
    rig.login()
    rig.core.poll()
    assert rig.take() == []
    assert rig.outbox.can_undo(row)


def test_a_message_that_may_have_left_is_cancelled_through_the_server(rig: Rig) -> None:
    rig.login()
    row = rig.write("oops")
    rig.core.poll()
    rig.take()
    rig.give_up(row)
    assert row.state is OutState.CANCELLING
    assert rig.outbox.can_undo(row)  # the server has not been told yet
    rig.core.poll()
    assert rig.take() == [p.Cancel(client_id=row.client_id)]
    assert not rig.outbox.can_undo(row)
    rig.core.on_frame(p.Cancelled(client_id=row.client_id))
    assert row.state is OutState.GIVEN_UP
    assert [e.message.state for e in rig.of(MessageChanged)] == [
        OutState.CANCELLING,
        OutState.GIVEN_UP,
    ]
    assert rig.store.outbox_row(row.client_id).state is OutState.GIVEN_UP  # type: ignore[union-attr]


def test_a_cancel_that_comes_too_late_shows_the_message_as_delivered(rig: Rig) -> None:
    rig.login()
    row = rig.write("already there")
    rig.core.poll()
    rig.take()
    rig.give_up(row)
    rig.core.poll()
    rig.take()
    # The server had stored it: the answer to the cancel is the original ack.
    rig.core.on_frame(p.Ack(client_id=row.client_id, conv=CONV, seq=1, ts=1, duplicate=True))
    assert row.state is OutState.SENT
    [anyway] = rig.of(DeliveredAnyway)
    assert anyway.message.client_id == row.client_id and anyway.message.seq == 1


def test_a_cancelling_message_holds_its_peer_until_its_fate_is_known(rig: Rig) -> None:
    rig.login()
    first = rig.write("first")
    rig.core.poll()
    rig.take()
    rig.give_up(first)
    second = rig.write("second")
    rig.core.poll()
    assert rig.take() == [p.Cancel(client_id=first.client_id)]
    rig.core.on_frame(p.Cancelled(client_id=first.client_id))
    rig.core.poll()
    assert rig.take() == [p.Send(client_id=second.client_id, to="bob", body="second")]


def test_a_cancel_is_sent_again_in_the_next_session(rig: Rig) -> None:
    rig.login()
    row = rig.write("x")
    rig.core.poll()
    rig.take()
    rig.give_up(row)
    rig.core.poll()
    assert rig.take() == [p.Cancel(client_id=row.client_id)]
    rig.core.end_session()
    rig.login()
    rig.core.poll()
    assert rig.take() == [p.Cancel(client_id=row.client_id)]


def test_undo_before_the_server_is_told_makes_it_failed_again(rig: Rig) -> None:
    rig.login()
    row = rig.write("x")
    rig.core.poll()
    rig.take()
    rig.core.end_session()  # offline: the cancel cannot go out
    rig.give_up(row)
    rig.core.poll()
    assert rig.take() == []
    assert rig.outbox.can_undo(row)
    rig.outbox.undo_give_up(row)
    assert row.state is OutState.FAILED


def test_a_send_refused_as_cancelled_is_given_up(rig: Rig) -> None:
    rig.login()
    row = rig.write("x")
    rig.core.poll()
    rig.take()
    rig.give_up(row)
    reject = p.Reject(
        client_id=row.client_id, code="cancelled", reason="cancelled", retryable=False
    )
    rig.core.on_frame(reject)
    assert row.state is OutState.GIVEN_UP


def test_a_new_epoch_resets_the_replica_and_keeps_the_outbox(rig: Rig) -> None:
    rig.login("e1")
    rig.core.on_frame(msg(1))
    row = rig.write("keep me")
    rig.core.end_session()
    welcome = p.Welcome(v=1, user="alice", epoch="e2", server_time=0)
    end = rig.core.on_welcome(welcome)
    assert end is not None and end.retry is Retry.AT_ONCE
    assert rig.store.watermarks() == {} and rig.store.epoch == "e2"
    assert rig.of(EpochReset) == [EpochReset("e1", "e2")]
    assert [r.client_id for r in rig.store.open_outbox()] == [row.client_id]


def test_a_server_behind_our_cursors_makes_us_resync(rig: Rig) -> None:
    rig.login()
    rig.core.on_frame(msg(1))
    rig.core.on_frame(msg(2))
    rig.core.end_session()
    rig.core.on_welcome(p.Welcome(v=1, user="alice", epoch="e1", server_time=0))
    end = rig.core.on_frame(p.Synced(cursors={CONV: 1}))
    assert end is not None and end.retry is Retry.AT_ONCE
    assert rig.store.watermarks() == {}


def test_an_overdue_ack_is_shown_as_silence_then_ends_the_session(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ack_timeout=5.0)
    rig.login()
    rig.write("x")
    rig.core.poll()
    rig.take()
    rig.clock.now += SILENCE_AFTER + 0.1
    _, end = rig.core.poll()
    assert end is None and len(rig.silences) == 1 and rig.silences[0] is not None
    rig.clock.now += 5.0
    _wait, end = rig.core.poll()
    assert end is not None and end.retry is Retry.PROMPTLY
    rig.core.end_session()
    assert rig.silences[-1] is None
    rig.store.close()


def test_an_ack_that_contradicts_the_history_is_ignored(rig: Rig) -> None:
    rig.login()
    rig.core.on_frame(msg(1))  # bob's message holds seq 1
    row = rig.write("mine")
    rig.core.poll()
    rig.take()
    rig.core.on_frame(p.Ack(client_id=row.client_id, conv=CONV, seq=1, ts=1))
    assert row.state is OutState.PENDING
    assert rig.store.message_view(CONV, 1).sender == "bob"  # type: ignore[union-attr]


def test_lookup_asks_once_and_answers_every_waiter(rig: Rig) -> None:
    answers: list[bool | None] = []
    rig.core.lookup("carol", answers.append)
    assert answers == [None] and rig.take() == []  # offline: cannot know
    rig.login()
    rig.core.lookup("carol", answers.append)
    rig.core.lookup("carol", answers.append)
    assert rig.take() == [p.Lookup(user="carol")]
    rig.core.on_frame(p.UserInfo(user="carol", exists=False))
    assert answers == [None, False, False]


def test_messages_for_someone_else_are_refused(rig: Rig) -> None:
    rig.login()
    rig.core.on_frame(msg(1, sender="bob", to="carol"))
    assert rig.store.watermarks() == {} and rig.of(MessageAdded) == []


def test_a_read_mark_made_offline_is_sent_at_the_next_synced(rig: Rig) -> None:
    rig.login()
    rig.core.on_frame(msg(1))
    rig.core.on_frame(msg(2))
    rig.core.end_session()
    rig.core.mark_read(CONV, 1)
    rig.core.mark_read(CONV, 2)
    assert rig.take() == []
    rig.login()
    assert rig.take() == [p.Read(conv=CONV, seq=2)]
    rig.core.end_session()
    rig.login()
    assert rig.take() == []  # told once

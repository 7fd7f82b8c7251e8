"""Attacks on group visibility: a non-member or a removed member can neither read nor send.

Every way in is tried: ``send {conv}``, every group command, ``history`` with any
``before``/``after``, ``hello`` cursors (including hostile ones), ``read`` receipts, and
live fan-out. A member who is removed and re-added sees exactly its intervals. The rule
(docs/protocol.md, "Groups"): a member receives every event from the seq at which it joined
up to and including the event that removed it, nothing after, live, in replay or in history.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.wire import (
    QUIET,
    RunningServer,
    ServerFactory,
    assert_silent,
    command,
    connect_ws,
    login,
    recv_until,
    send_frame,
)
from tui_chat import protocol as p

E = p.ErrorCode
USERS = ("alice", "bob", "carol", "mallory")
HUGE = p.MAX_SEQ


async def acked(ws: ClientConnection, frame: p._Frame) -> p.Ack:
    answer = await command(ws, frame)
    assert isinstance(answer, p.Ack), answer
    return answer


async def history(ws: ClientConnection, **kw: object) -> p.HistoryPage | p.Error:
    """The answer to one history request (live messages before it are skipped)."""
    await send_frame(ws, p.HistoryRequest(**kw))  # type: ignore[arg-type]
    frame, _ = await recv_until(ws, p.HistoryPage | p.Error)  # type: ignore[arg-type]
    assert isinstance(frame, p.HistoryPage | p.Error)
    return frame


def history_requests(conv: str, removed_at: int) -> list[dict[str, object]]:
    """``before``/``after`` combinations around, below and far beyond the removal."""
    befores: list[int | None] = [None, removed_at, removed_at + 1, removed_at + 5, HUGE]
    afters: list[int | None] = [None, 0, removed_at - 1, removed_at, removed_at + 2, HUGE - 1]
    return [
        {"conv": conv, "before": b, "after": a, "limit": 500}
        for b, a in itertools.product(befores, afters)
    ]


@pytest.fixture
async def srv(chat_server_factory: ServerFactory) -> RunningServer:
    return await chat_server_factory(users=USERS)


async def group_with_removal(srv: RunningServer) -> tuple[str, int, int]:
    """alice's group with bob and carol: 2 texts, carol removed, then 3 more texts.

    Returns (conv, seq of carol's removal, last seq).
    """
    alice = (await login(srv.url, "alice", srv.tokens["alice"])).ws
    try:
        create = p.Create(client_id="g", title="secret plans", members=["bob", "carol"])
        conv = (await acked(alice, create)).conv
        for i in range(2):
            await acked(alice, p.Send(client_id=f"before-{i}", conv=conv, body="shared"))
        removed = (await acked(alice, p.Remove(client_id="kick", conv=conv, user="carol"))).seq
        last = removed
        for i in range(3):
            last = (await acked(alice, p.Send(client_id=f"after-{i}", conv=conv, body="s"))).seq
        # bob reads everything: a receipt carol must not learn about.
        bob = (await login(srv.url, "bob", srv.tokens["bob"])).ws
        await send_frame(bob, p.Read(conv=conv, seq=last))
        await recv_until(bob, p.Receipt)
        await bob.close()
    finally:
        await alice.close()
    return conv, removed, last


async def test_a_non_member_can_neither_read_nor_send(srv: RunningServer) -> None:
    conv, _removed, last = await group_with_removal(srv)
    mallory = await login(srv.url, "mallory", srv.tokens["mallory"], cursors={conv: 0})
    ws = mallory.ws
    try:
        # A cursor for a group one never joined replays nothing and is not echoed.
        assert mallory.replayed == [] and mallory.receipts == []
        assert conv not in mallory.synced.cursors
        for frame in (
            p.Send(client_id="s", conv=conv, body="let me in"),
            p.Add(client_id="a", conv=conv, user="mallory"),
            p.Remove(client_id="r", conv=conv, user="bob"),
            p.Leave(client_id="l", conv=conv),
            p.Rename(client_id="n", conv=conv, title="pwned"),
        ):
            answer = await command(ws, frame)
            assert isinstance(answer, p.Reject) and answer.code == E.NOT_MEMBER, answer
        for req in history_requests(conv, last):
            page = await history(ws, **req)
            assert isinstance(page, p.Error) and page.code == E.NOT_MEMBER, (req, page)
        await send_frame(ws, p.Read(conv=conv, seq=1))
        err, _ = await recv_until(ws, p.Error)
        assert err.code == E.NOT_MEMBER
        await assert_silent(ws)
    finally:
        await ws.close()
    # Nothing mallory did changed the group.
    alice = await login(srv.url, "alice", srv.tokens["alice"])
    await alice.ws.close()
    assert [m.seq for m in alice.replayed if m.conv == conv] == list(range(1, last + 1))


async def test_a_removed_member_reads_nothing_after_its_removal(srv: RunningServer) -> None:
    conv, removed, last = await group_with_removal(srv)
    # Replay, from every kind of cursor, stops at the removal.
    for cursors in ({}, {conv: 0}, {conv: removed - 1}, {conv: removed}, {conv: HUGE}):
        carol = await login(srv.url, "carol", srv.tokens["carol"], cursors=cursors)
        await carol.ws.close()
        seqs = [m.seq for m in carol.replayed if m.conv == conv]
        start = min(cursors.get(conv, 0), removed)
        assert seqs == list(range(start + 1, removed + 1)), cursors
        assert carol.synced.cursors[conv] == removed
        # Read positions of a group one is no longer in are not replayed.
        assert [r for r in carol.receipts if r.conv == conv] == []
    carol = (await login(srv.url, "carol", srv.tokens["carol"])).ws
    try:
        for req in history_requests(conv, removed):
            page = await history(carol, **req)
            assert isinstance(page, p.HistoryPage), (req, page)
            assert all(m.seq <= removed for m in page.messages), (req, page)
            assert all(m.conv == conv for m in page.messages)
        page = await history(carol, conv=conv, after=0)
        assert isinstance(page, p.HistoryPage)
        assert [m.seq for m in page.messages] == list(range(1, removed + 1))
        assert page.complete is True
        # Nothing visible above the removal: an empty, complete page.
        page = await history(carol, conv=conv, after=removed)
        assert isinstance(page, p.HistoryPage) and (page.messages, page.complete) == ([], True)
        for frame in (
            p.Send(client_id="s", conv=conv, body="still here?"),
            p.Leave(client_id="l", conv=conv),
            p.Rename(client_id="n", conv=conv, title="mine"),
            p.Add(client_id="a", conv=conv, user="carol"),
        ):
            answer = await command(carol, frame)
            assert isinstance(answer, p.Reject) and answer.code == E.NOT_MEMBER, answer
        await send_frame(carol, p.Read(conv=conv, seq=last))
        err, _ = await recv_until(carol, p.Error)
        assert err.code == E.NOT_MEMBER
    finally:
        await carol.close()


async def test_a_removed_member_receives_nothing_live(srv: RunningServer) -> None:
    alice = (await login(srv.url, "alice", srv.tokens["alice"])).ws
    bob = (await login(srv.url, "bob", srv.tokens["bob"])).ws
    carol = (await login(srv.url, "carol", srv.tokens["carol"])).ws
    carol2 = (await login(srv.url, "carol", srv.tokens["carol"])).ws
    try:
        create = p.Create(client_id="g", title="t", members=["bob", "carol"])
        conv = (await acked(alice, create)).conv
        await acked(alice, p.Remove(client_id="kick", conv=conv, user="carol"))
        for ws in (carol, carol2):
            frames = []
            while len([f for f in frames if isinstance(f, p.Message)]) < 2:
                frame, _ = await recv_until(ws, p.Message)
                frames.append(frame)
            assert [(m.seq, m.kind) for m in frames] == [(1, "created"), (2, "removed")]
        # Messages, renames, receipts, more membership changes: none reaches carol.
        await acked(bob, p.Send(client_id="b", conv=conv, body="after"))
        await acked(alice, p.Rename(client_id="n", conv=conv, title="new"))
        await acked(alice, p.Add(client_id="a", conv=conv, user="mallory"))
        await send_frame(bob, p.Read(conv=conv, seq=5))
        await recv_until(bob, p.Receipt)
        await assert_silent(carol)
        await assert_silent(carol2, QUIET / 3)
    finally:
        for ws in (alice, bob, carol, carol2):
            await ws.close()


async def test_a_re_added_member_sees_exactly_its_intervals(srv: RunningServer) -> None:
    alice = (await login(srv.url, "alice", srv.tokens["alice"])).ws
    try:
        create = p.Create(client_id="g", title="t", members=["bob", "carol"])
        conv = (await acked(alice, create)).conv  # 1
        await acked(alice, p.Send(client_id="m2", conv=conv, body="in"))  # 2
        await acked(alice, p.Remove(client_id="r3", conv=conv, user="carol"))  # 3
        await acked(alice, p.Send(client_id="m4", conv=conv, body="out"))  # 4
        await acked(alice, p.Send(client_id="m5", conv=conv, body="out"))  # 5
        await acked(alice, p.Add(client_id="a6", conv=conv, user="carol"))  # 6
        await acked(alice, p.Send(client_id="m7", conv=conv, body="in again"))  # 7
    finally:
        await alice.close()
    visible = [1, 2, 3, 6, 7]
    carol = await login(srv.url, "carol", srv.tokens["carol"])
    try:
        assert [m.seq for m in carol.replayed] == visible
        assert carol.synced.cursors == {conv: 7}
        # The re-adding event carries the members (where this interval's view begins).
        readd = carol.replayed[3]
        assert (readd.kind, readd.user, readd.members) == (
            "added",
            "carol",
            ["alice", "bob", "carol"],
        )
        # A cursor inside the hole resumes at the next interval.
        again = await login(srv.url, "carol", srv.tokens["carol"], cursors={conv: 4})
        await again.ws.close()
        assert [m.seq for m in again.replayed] == [6, 7]
        page = await history(carol.ws, conv=conv, after=0)
        assert isinstance(page, p.HistoryPage)
        assert [m.seq for m in page.messages] == visible and page.complete
        page = await history(carol.ws, conv=conv, before=6)
        assert isinstance(page, p.HistoryPage)
        assert ([m.seq for m in page.messages], page.complete) == ([1, 2, 3], True)
        # Paging back from the second interval: incomplete while the first lies below.
        page = await history(carol.ws, conv=conv, before=8, limit=2)
        assert isinstance(page, p.HistoryPage)
        assert ([m.seq for m in page.messages], page.complete) == ([6, 7], False)
        page = await history(carol.ws, conv=conv, before=6, after=3)
        assert isinstance(page, p.HistoryPage) and (page.messages, page.complete) == ([], True)
    finally:
        await carol.ws.close()
    # bob, a member throughout, sees every seq; his copy of the re-add has no member list.
    bob = await login(srv.url, "bob", srv.tokens["bob"])
    await bob.ws.close()
    assert [m.seq for m in bob.replayed] == list(range(1, 8))
    assert bob.replayed[5].members is None


async def test_a_removal_racing_with_reads_never_leaks_a_later_event(srv: RunningServer) -> None:
    """carol pages history and reconnects while alice removes her amid a stream of sends:
    whatever carol reads, nothing is after her removal."""
    alice = (await login(srv.url, "alice", srv.tokens["alice"])).ws
    carol = (await login(srv.url, "carol", srv.tokens["carol"])).ws
    try:
        create = p.Create(client_id="g", title="t", members=["bob", "carol"])
        conv = (await acked(alice, create)).conv

        async def writes() -> None:
            for i in range(30):
                await send_frame(alice, p.Send(client_id=f"w{i}", conv=conv, body=str(i)))
                if i == 15:
                    await send_frame(alice, p.Remove(client_id="kick", conv=conv, user="carol"))
            await acked(alice, p.Send(client_id="last", conv=conv, body="done"))

        async def reads() -> list[int]:
            seen: list[int] = []
            for _ in range(20):
                page = await history(carol, conv=conv, after=0, limit=500)
                assert isinstance(page, p.HistoryPage)
                seen += [m.seq for m in page.messages]
                again = await login(srv.url, "carol", srv.tokens["carol"])
                await again.ws.close()
                seen += [m.seq for m in again.replayed]
            return seen

        _, seen = await asyncio.gather(writes(), reads())
    finally:
        await alice.close()
        await carol.close()
    final = await login(srv.url, "carol", srv.tokens["carol"])
    await final.ws.close()
    removal = final.replayed[-1]
    assert (removal.kind, removal.user) == ("removed", "carol")
    assert max(seen) <= removal.seq


async def test_the_paged_replay_honours_visibility_too(srv: RunningServer) -> None:
    """``hello {replay_pages}``: the same intervals, as history pages, from any cursor."""
    conv, removed, _last = await group_with_removal(srv)
    for cursors in ({}, {conv: 0}, {conv: removed - 1}, {conv: HUGE}):
        ws = await connect_ws(srv.url)
        try:
            hello = p.Hello(
                v=p.PROTOCOL_VERSION,
                user="carol",
                token=srv.tokens["carol"],
                cursors=cursors,
                replay_pages=True,
            )
            await send_frame(ws, hello)
            synced, before = await recv_until(ws, p.Synced)
        finally:
            await ws.close()
        seqs = [m.seq for f in before if isinstance(f, p.HistoryPage) for m in f.messages]
        assert not [f for f in before if isinstance(f, p.Message)]
        start = min(cursors.get(conv, 0), removed)
        assert seqs == list(range(start + 1, removed + 1)), cursors
        assert synced.cursors[conv] == removed


async def test_sends_racing_with_the_removal_are_decided_in_seq_order(
    srv: RunningServer,
) -> None:
    """carol sends a burst while alice removes her: each send is either stored before the
    removal (a lower seq) or refused not_member; none is stored after it."""
    alice = (await login(srv.url, "alice", srv.tokens["alice"])).ws
    carol = (await login(srv.url, "carol", srv.tokens["carol"])).ws
    try:
        create = p.Create(client_id="g", title="t", members=["bob", "carol"])
        conv = (await acked(alice, create)).conv
        for i in range(40):
            await send_frame(carol, p.Send(client_id=f"c{i}", conv=conv, body=str(i)))
            if i == 10:
                await send_frame(alice, p.Remove(client_id="kick", conv=conv, user="carol"))
        answers: dict[str, p.Ack | p.Reject] = {}
        while len(answers) < 40:
            frame, _ = await recv_until(carol, p.Ack | p.Reject)  # type: ignore[arg-type]
            assert isinstance(frame, p.Ack | p.Reject)
            answers[frame.client_id] = frame
        # The removal's own ack (its frame was sent in the burst above).
        removal, _ = await recv_until(alice, p.Ack)
        assert removal.client_id == "kick"
    finally:
        await alice.close()
        await carol.close()
    acked_seqs = [a.seq for a in answers.values() if isinstance(a, p.Ack)]
    refused = [a for a in answers.values() if isinstance(a, p.Reject)]
    assert all(seq < removal.seq for seq in acked_seqs)
    assert all(r.code == E.NOT_MEMBER for r in refused)
    assert len(acked_seqs) + len(refused) == 40

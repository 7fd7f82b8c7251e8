"""A real Engine on the Matrix transport against a real Synapse: ◷ → ✓, receive, catch-up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec

from harness.synapse import Account, Synapse
from harness.waits import until
from tests.matrix.support import matrix_config, room_texts, room_with, start
from tests.support.engines import Engines
from tui_chat.core.config import ClientConfig
from tui_chat.core.models import GROUP_PREFIX, ConnState, OutState
from tui_chat.matrix.http import API, MatrixHttp
from tui_chat.matrix.transport import MatrixTransport


async def test_send_pending_then_sent_and_received(synapse: Synapse, engines: Engines) -> None:
    alice, bob = synapse.register("alice"), synapse.register("bob")
    room = await room_with(synapse, alice, bob, name="Lunch")
    a = await start(engines, alice, synapse.url)
    b = await start(engines, bob, synapse.url)
    await a.online(30)
    await b.online(30)
    key = GROUP_PREFIX + room
    await until(lambda: a.engine.store.has_conversation(key), "alice sees the room")
    assert a.engine.conversation(key).title == "Lunch"
    sent = a.engine.send(key, "hello bob")
    assert sent.state is OutState.PENDING  # ◷ at once
    await until(lambda: a.state_of(sent.client_id) is OutState.SENT, "alice's message is sent")
    states = [e.message.state for e in a.changed(sent.client_id)]
    assert states[-1] is OutState.SENT
    await until(
        lambda: any(m.body == "hello bob" for m in b.engine.messages(key)), "bob receives it"
    )
    got = [m for m in b.engine.messages(key) if m.body == "hello bob"]
    assert got[0].sender == alice.user_id
    assert await room_texts(synapse, alice, room) == [(alice.user_id, "hello bob")]


async def test_catch_up_after_offline(synapse: Synapse, engines: Engines) -> None:
    alice, bob = synapse.register("alice"), synapse.register("bob")
    room = await room_with(synapse, alice, bob)
    key = GROUP_PREFIX + room
    b = await start(engines, bob, synapse.url, name="bob-1")
    await b.online(30)
    await until(lambda: b.engine.store.has_conversation(key), "bob sees the room")
    await engines.stop(b)
    a = await start(engines, alice, synapse.url)
    await a.online(30)
    await until(lambda: a.engine.store.has_conversation(key), "alice sees the room")
    rows = [a.engine.send(key, f"m{i}") for i in range(30)]
    await until(
        lambda: all(a.state_of(r.client_id) is OutState.SENT for r in rows),
        "all 30 sent",
        within=60,
    )
    b2 = await start(engines, bob, synapse.url, name="bob-1")  # the same store
    await b2.online(30)

    def texts() -> list[str]:
        return [m.body for m in b2.engine.messages(key, limit=500) if m.kind == "text"]

    await until(lambda: len(texts()) >= 30, "bob catches up", within=30)
    assert texts() == [f"m{i}" for i in range(30)]
    seqs = [m.seq for m in b2.engine.messages(key, limit=500)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_limited_timeline_is_back_filled_without_a_gap(
    synapse: Synapse, engines: Engines
) -> None:
    """Bob's /sync timeline holds 5 events; 40 arrive while he is offline: /messages
    back-fills the rest, so he holds every one, once, in the server's order."""
    alice, bob = synapse.register("alice"), synapse.register("bob")
    room = await room_with(synapse, alice, bob)
    key = GROUP_PREFIX + room

    def small(cfg: ClientConfig) -> MatrixTransport:
        return MatrixTransport(cfg.server.url, bob.user_id, cfg.sync, timeline_limit=5)

    cfg = matrix_config(engines.root, bob, synapse.url, name="bob-small")
    b = await engines.run(cfg, bob.access_token, small(cfg))
    await b.online(30)
    await until(lambda: b.engine.store.has_conversation(key), "bob sees the room")
    await engines.stop(b)
    http = MatrixHttp(synapse.url, token=alice.access_token)
    try:
        for i in range(40):
            await http.send_message(room, f"t{i}", {"msgtype": "m.text", "body": f"b{i}"})
    finally:
        await http.aclose()
    b2 = await engines.run(cfg, bob.access_token, small(cfg))
    await b2.online(30)

    def texts() -> list[str]:
        return [m.body for m in b2.engine.messages(key, limit=500) if m.kind == "text"]

    await until(lambda: len(texts()) >= 40, "bob holds all 40", within=30)
    assert texts() == [f"b{i}" for i in range(40)]
    seqs = [m.seq for m in b2.engine.messages(key, limit=500)]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_refused_token_waits_for_the_user(synapse: Synapse, engines: Engines) -> None:
    alice = synapse.register("alice")
    bad = Account(alice.user_id, alice.localpart, alice.password, "not-a-token", "X")
    a = await start(engines, bad, synapse.url)
    await until(lambda: a.state is ConnState.AUTH_FAILED, "auth_failed", within=30)
    assert "M_UNKNOWN_TOKEN" in (a.engine.status.reason or "")


async def until_async(cond: Callable[[], Awaitable[bool]], what: str, within: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await cond():
        assert asyncio.get_running_loop().time() < deadline, f"not within {within} s: {what}"


async def test_mark_read_sends_a_read_receipt(synapse: Synapse, engines: Engines) -> None:
    alice, bob = synapse.register("alice"), synapse.register("bob")
    room = await room_with(synapse, alice, bob)
    key = GROUP_PREFIX + room
    http = MatrixHttp(synapse.url, token=bob.access_token)
    try:
        event_id = await http.send_message(room, "r1", {"msgtype": "m.text", "body": "read me"})
        a = await start(engines, alice, synapse.url)
        await a.online(30)
        await until(
            lambda: any(m.body == "read me" for m in a.engine.messages(key)), "alice has it"
        )
        # Bob's incremental /sync from here on (an initial one may be served from cache).
        since = (await http.sync(None, timeout_ms=0)).next_batch
        a.engine.mark_read(key)

        async def receipt() -> bool:
            nonlocal since
            raw = await http.request(
                "GET", f"{API}/sync", msgspec.Raw, params={"timeout": "1000", "since": since}
            )
            data = msgspec.json.decode(bytes(raw))
            since = data["next_batch"]
            joined = data.get("rooms", {}).get("join", {})
            ephemeral = joined.get(room, {}).get("ephemeral", {}).get("events", [])
            return any(
                alice.user_id in e["content"].get(event_id, {}).get("m.read", {})
                for e in ephemeral
                if e["type"] == "m.receipt"
            )

        await until_async(receipt, "bob's /sync shows alice's receipt on the message")
    finally:
        await http.aclose()

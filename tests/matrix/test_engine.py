"""A real Engine on the Matrix transport against a real Synapse: ◷ → ✓, receive, catch-up."""

from __future__ import annotations

from harness.synapse import Synapse
from harness.waits import until
from tests.matrix.support import room_texts, room_with, start
from tests.support.engines import Engines
from tui_chat.core.models import GROUP_PREFIX, OutState


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

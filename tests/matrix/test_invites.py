"""Invites: a group invite shows as the group at once; writing accepts it, leaving
declines it. A DM invite is accepted by answering the peer."""

from __future__ import annotations

from harness.synapse import Synapse
from harness.waits import until
from tests.matrix.support import room_texts, start
from tests.support.engines import Engines
from tui_chat.core.models import ConversationReplaced, OutState
from tui_chat.core.store import RESUME_SLOT
from tui_chat.matrix.mapping import load_state


async def test_group_invite_shown_accepted_by_writing_declined_by_leaving(
    synapse: Synapse, engines: Engines
) -> None:
    alice, bob, carol = (synapse.register(n) for n in ("alice", "bob", "carol"))
    a = await start(engines, alice, synapse.url)
    b = await start(engines, bob, synapse.url)
    c = await start(engines, carol, synapse.url)
    for client in (a, b, c):
        await client.online(30)
    made = a.engine.create_group("Lunch", [bob.user_id, carol.user_id])
    await until(lambda: a.state_of(made.client_id) is OutState.SENT, "created", 30)
    (replaced,) = [e for e in a.of(ConversationReplaced) if e.old == made.peer]
    key = replaced.new
    assert key is not None
    room = key[1:]
    await until(lambda: b.engine.store.has_conversation(key), "bob sees the invitation", 30)
    await until(lambda: b.engine.conversation(key).title == "Lunch", "titled")
    assert {alice.user_id, bob.user_id} <= set(b.engine.store.members(key))

    reply = b.engine.send(key, "I'm in")
    await until(lambda: b.state_of(reply.client_id) is OutState.SENT, "bob's reply sent", 30)
    await until(lambda: any(m.body == "I'm in" for m in a.engine.messages(key)), "alice reads it")

    await until(lambda: c.engine.store.has_conversation(key), "carol sees the invitation", 30)
    no = c.engine.leave_group(key)
    await until(lambda: c.state_of(no.client_id) is OutState.SENT, "carol declined", 30)
    await until(lambda: carol.user_id not in a.engine.store.members(key), "alice sees it")
    assert await room_texts(synapse, alice, room) == [(bob.user_id, "I'm in")]


async def test_dm_invite_is_accepted_by_answering(synapse: Synapse, engines: Engines) -> None:
    alice, bob = synapse.register("alice"), synapse.register("bob")
    a = await start(engines, alice, synapse.url)
    b = await start(engines, bob, synapse.url)
    await a.online(30)
    await b.online(30)
    hi = a.engine.send(bob.user_id, "hi bob")
    await until(lambda: a.state_of(hi.client_id) is OutState.SENT, "alice's DM sent", 30)
    room = a.engine.store.conv_of(bob.user_id)
    assert room is not None

    def invited() -> bool:  # bob's engine has seen the invite (its committed checkpoint)
        return room in load_state(b.engine.store.transport_state(RESUME_SLOT)).invited_direct

    await until(invited, "bob's engine has seen the DM invite", within=30)
    back = b.engine.send(alice.user_id, "hi alice")
    await until(lambda: b.state_of(back.client_id) is OutState.SENT, "bob's answer sent", 30)
    assert b.engine.store.conv_of(alice.user_id) == room  # the same room: no second DM
    await until(
        lambda: [m.body for m in a.engine.messages(bob.user_id)] == ["hi bob", "hi alice"],
        "alice reads the answer in the same conversation",
    )
    await until(
        lambda: [m.body for m in b.engine.messages(alice.user_id)] == ["hi bob", "hi alice"],
        "bob reads both",
        within=30,
    )

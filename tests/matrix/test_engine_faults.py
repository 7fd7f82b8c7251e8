"""The engine's guarantees on Matrix through faults: an outage, a lost answer, a hung
homeserver. Every check reads the room back through the API: stored once, never twice."""

from __future__ import annotations

import asyncio
import logging

import pytest

from harness.faultproxy import FaultProxy
from harness.synapse import Synapse
from harness.waits import stays, until
from tests.matrix.support import room_texts, room_with, start
from tests.support.engines import Engines
from tui_chat.core.models import GROUP_PREFIX, ConnState, OutState


async def test_outage_message_waits_then_sent_once(synapse: Synapse, engines: Engines) -> None:
    alice, bob = synapse.register("alice"), synapse.register("bob")
    room = await room_with(synapse, alice, bob)
    key = GROUP_PREFIX + room
    async with FaultProxy("127.0.0.1", synapse.port) as proxy:
        a = await start(engines, alice, f"http://127.0.0.1:{proxy.port}")
        await a.online(30)
        await until(lambda: a.engine.store.has_conversation(key), "alice sees the room")
        proxy.blackhole()
        proxy.refuse()
        await until(lambda: a.state is not ConnState.ONLINE, "the outage is noticed", within=20)
        sent = a.engine.send(key, "during the outage")
        await stays(lambda: a.state_of(sent.client_id) is OutState.PENDING, "the message is ◷", 1.5)
        proxy.pass_through()
        await until(
            lambda: a.state_of(sent.client_id) is OutState.SENT, "sent after the outage", 30
        )
    assert await room_texts(synapse, alice, room) == [(alice.user_id, "during the outage")]


async def test_lost_answer_is_resent_with_the_same_txn(synapse: Synapse, engines: Engines) -> None:
    """The PUT reaches the homeserver, its answer and the /sync echo are lost: the retry
    after the reconnect uses the same txnId, so the room holds the message once."""
    alice, bob = synapse.register("alice"), synapse.register("bob")
    room = await room_with(synapse, alice, bob)
    key = GROUP_PREFIX + room
    async with FaultProxy("127.0.0.1", synapse.port) as proxy:
        a = await start(engines, alice, f"http://127.0.0.1:{proxy.port}")
        await a.online(30)
        await until(lambda: a.engine.store.has_conversation(key), "alice sees the room")
        proxy.blackhole(direction="down")
        sent = a.engine.send(key, "lost ack")
        for _ in range(300):  # the PUT reached the homeserver (read directly, not proxied)
            if await room_texts(synapse, alice, room):
                break
            await asyncio.sleep(0.05)
        assert await room_texts(synapse, alice, room) == [(alice.user_id, "lost ack")]
        await until(lambda: a.state is not ConnState.ONLINE, "the lost answer is noticed", 20)
        assert a.state_of(sent.client_id) is not OutState.SENT
        proxy.pass_through()
        await until(lambda: a.state_of(sent.client_id) is OutState.SENT, "sent at last", 30)
    assert await room_texts(synapse, alice, room) == [(alice.user_id, "lost ack")]


async def test_hung_homeserver_sigstop(synapse: Synapse, engines: Engines) -> None:
    alice, bob = synapse.register("alice"), synapse.register("bob")
    room = await room_with(synapse, alice, bob)
    key = GROUP_PREFIX + room
    a = await start(engines, alice, synapse.url)
    await a.online(30)
    await until(lambda: a.engine.store.has_conversation(key), "alice sees the room")
    synapse.pause()
    try:
        sent = a.engine.send(key, "into a hung homeserver")
        await until(lambda: a.state is not ConnState.ONLINE, "the hang is noticed", within=20)
        assert a.state_of(sent.client_id) is OutState.PENDING
    finally:
        synapse.resume()
    await until(lambda: a.state_of(sent.client_id) is OutState.SENT, "sent after SIGCONT", 30)
    assert await room_texts(synapse, alice, room) == [(alice.user_id, "into a hung homeserver")]


async def test_rate_limited_sends_wait_and_are_not_failures(
    synapse: Synapse, engines: Engines, caplog: pytest.LogCaptureFixture
) -> None:
    """429 M_LIMIT_EXCEEDED: each message waits retry_after_ms and goes, none fails."""
    admin = synapse.register("admin", admin=True)
    alice, bob = synapse.register("alice"), synapse.register("bob")
    room = await room_with(synapse, alice, bob)
    key = GROUP_PREFIX + room
    a = await start(engines, alice, synapse.url)
    await a.online(30)
    await until(lambda: a.engine.store.has_conversation(key), "alice sees the room")
    caplog.set_level(logging.INFO, logger="tui_chat.matrix.transport")
    await asyncio.to_thread(synapse.limit_messages, admin, alice.user_id, 1, 1)
    rows = [a.engine.send(key, f"r{i}") for i in range(4)]
    await until(lambda: all(a.state_of(r.client_id) is OutState.SENT for r in rows), "all sent", 60)
    for r in rows:
        assert OutState.FAILED not in [e.message.state for e in a.changed(r.client_id)]
    assert "rate limited by the homeserver" in caplog.text  # it really was throttled
    assert await room_texts(synapse, alice, room) == [(alice.user_id, f"r{i}") for i in range(4)]

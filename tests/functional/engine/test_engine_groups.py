"""Groups through real engines and the real server: create, exchange, offline, removal.

Three users (alice, bob, carol) on the in-process server; each engine has its own store.
"""

from __future__ import annotations

from harness.faultproxy import FaultProxy
from harness.waits import until
from tests.support.engines import Client, Engines, server_copies
from tests.support.wire import RunningServer
from tui_chat import protocol as p
from tui_chat.core.models import (
    ConnState,
    ConversationReplaced,
    ConvKind,
    OutState,
    group_key,
)
from tui_chat.core.store import NOT_MEMBER_REASON

K = p.MessageKind
SENT = OutState.SENT


def groups(client: Client) -> list[str]:
    return [s.peer for s in client.engine.conversations() if s.peer.startswith("#")]


def has_group(client: Client) -> bool:
    return len(groups(client)) == 1


def group_of(client: Client) -> str:
    [key] = groups(client)
    return key


def bodies(client: Client, key: str) -> list[str]:
    """The stored texts of a group, in seq order."""
    return [m.body for m in client.engine.store.page(key, None, 100) if m.kind == K.TEXT]


def texts(client: Client, key: str) -> list[tuple[str, str]]:
    return [(m.sender, m.body) for m in client.engine.messages(key) if m.kind == K.TEXT]


def members(client: Client, key: str) -> tuple[str, ...]:
    return client.engine.conversation(key).members


async def start_three(server: RunningServer, engines: Engines) -> list[Client]:
    clients = [
        await engines.start(u, server.tokens[u], server.url) for u in ("alice", "bob", "carol")
    ]
    for c in clients:
        await c.online()
    return clients


async def create(alice: Client, title: str, names: list[str]) -> str:
    pending = alice.engine.create_group(title, names)
    assert pending.peer.startswith("+") and pending.kind == K.CREATED
    await until(lambda: alice.of(ConversationReplaced), "the create to be confirmed")
    replaced = alice.of(ConversationReplaced)
    assert [(e.old, e.new is not None) for e in replaced] == [(pending.peer, True)]
    key = replaced[0].new
    assert key is not None
    return key


async def test_three_users_create_a_group_and_exchange_messages(
    chat_server: RunningServer, engines: Engines
) -> None:
    alice, bob, carol = await start_three(chat_server, engines)
    key = await create(alice, "plans", ["bob", "carol"])
    conv = key[1:]
    for c in (bob, carol):
        await until(lambda c=c: members(c, key) == ("alice", "bob", "carol"), "members known")  # type: ignore[misc]
    summary = bob.engine.conversation(key)
    assert summary.kind is ConvKind.GROUP and summary.title == "plans"
    assert summary.creator == "alice" and summary.joined and summary.conv == conv

    sent = [(alice, alice.engine.send(key, "hello all")), (bob, bob.engine.send(key, "hi alice"))]
    carol.engine.send(key, "hey")
    for c in (alice, bob, carol):
        await until(lambda c=c: len(texts(c, key)) == 3, "three texts everywhere")  # type: ignore[misc]
    orders = [[m.seq for m in c.engine.messages(key)] for c in (alice, bob, carol)]
    assert orders[0] == orders[1] == orders[2] == list(range(1, 5))
    await until(lambda: all(c.state_of(m.client_id) is OutState.SENT for c, m in sent), "sent")
    # bob's "hi alice" mentions alice: unread and counted for her.
    mentioned = [m for m in alice.engine.messages(key) if m.mentions_me]
    assert [m.body for m in mentioned] == ["hi alice"]
    assert alice.engine.conversation(key).mentions == 1
    alice.engine.mark_read(key)
    assert alice.engine.conversation(key).mentions == 0

    alice.engine.rename_group(key, "new plans")
    await until(lambda: carol.engine.conversation(key).title == "new plans", "the rename")


async def test_sends_queued_before_the_engine_is_online_reach_the_group(
    chat_server: RunningServer, engines: Engines
) -> None:
    alice, bob, carol = await start_three(chat_server, engines)
    key = await create(alice, "offline", ["bob", "carol"])
    await until(lambda: members(bob, key) == ("alice", "bob", "carol"), "bob in the group")
    await engines.stop(bob)
    bob2 = await engines.run(bob.config, chat_server.tokens["bob"])
    # Queued before the engine is online: committed to the outbox, sent after the catch-up.
    queued = [bob2.engine.send(key, f"offline {i}") for i in range(3)]
    for c in (alice, carol):
        await until(lambda c=c: len(texts(c, key)) == 3, "the queued messages delivered")  # type: ignore[misc]
    assert [b for _, b in texts(carol, key)] == ["offline 0", "offline 1", "offline 2"]
    await until(
        lambda: all(bob2.state_of(m.client_id) is OutState.SENT for m in queued), "all sent"
    )


async def test_removal_while_stopped_fails_the_queued_message_with_the_reason(
    chat_server: RunningServer, engines: Engines
) -> None:
    alice, bob, carol = await start_three(chat_server, engines)
    key = await create(alice, "removal", ["bob", "carol"])
    await until(lambda: members(carol, key) == ("alice", "bob", "carol"), "carol in the group")
    await engines.stop(carol)
    alice.engine.remove_member(key, "carol")
    await until(lambda: members(alice, key) == ("alice", "bob"), "carol removed")
    alice.engine.send(key, "after carol left")
    await until(lambda: len(texts(bob, key)) == 1, "bob sees the text")

    carol2 = await engines.run(carol.config, chat_server.tokens["carol"])
    queued = carol2.engine.send(key, "written offline")  # before the catch-up says removed
    await carol2.online()
    await until(lambda: carol2.state_of(queued.client_id) is OutState.FAILED, "the send fails")
    failed = carol2.engine.message(queued.client_id)
    assert failed is not None and failed.error == NOT_MEMBER_REASON and not failed.retryable
    summary = carol2.engine.conversation(key)
    assert not summary.joined and summary.members == ("alice", "bob")
    # Nothing after the removal reached carol: her replica ends at her removal.
    stored = carol2.engine.store.page(key, None, 100)
    assert [(m.kind, m.user) for m in stored] == [(K.CREATED, None), (K.REMOVED, "carol")]


async def test_a_pending_create_refused_at_login_survives_two_restarts(
    chat_server: RunningServer, engines: Engines
) -> None:
    cfg = engines.config("alice", "not-the-token", chat_server.url)
    alice = await engines.run(cfg, "not-the-token")  # refused: the create stays pending
    pending = alice.engine.create_group("later", ["bob"])
    summary = alice.engine.conversation(pending.peer)
    assert summary.kind is ConvKind.GROUP and summary.conv is None
    assert summary.title == "later" and summary.members == ("alice", "bob")
    await engines.stop(alice)

    cfg = engines.config("alice", chat_server.tokens["alice"], chat_server.url)
    alice2 = await engines.run(cfg, chat_server.tokens["alice"])
    await until(lambda: alice2.of(ConversationReplaced), "the create confirmed")
    await until(lambda: alice2.state_of(pending.client_id) is OutState.SENT, "sent")
    replaced = alice2.of(ConversationReplaced)
    assert len(replaced) == 1 and replaced[0].old == pending.peer
    key = replaced[0].new
    assert key is not None and key.startswith("#")
    keys = [c.peer for c in alice2.engine.conversations()]
    assert pending.peer not in keys and key in keys
    assert members(alice2, key) == ("alice", "bob")
    # Confirmed once: a restart does not create it again.
    await engines.stop(alice2)
    alice3 = await engines.run(cfg, chat_server.tokens["alice"])
    await alice3.online()
    assert not alice3.of(ConversationReplaced)
    assert [c.peer for c in alice3.engine.conversations()].count(key) == 1
    assert group_key(key[1:]) == key


async def group_with(alice: Client, *others: Client) -> str:
    """A confirmed group of alice and ``others`` that every one of them holds."""
    made = alice.engine.create_group("g", [c.engine.user for c in others])
    await until(lambda: alice.state_of(made.client_id) is SENT, "the create to be confirmed")
    key = group_of(alice)
    for c in others:
        await until(lambda c=c: has_group(c), f"{c.engine.user} to see the group")  # type: ignore[misc]
    return key


async def test_offline_sends_to_a_group_are_delivered_after_reconnect(
    chat_server: RunningServer, proxy: FaultProxy, engines: Engines
) -> None:
    t = chat_server.tokens
    alice = await engines.start("alice", t["alice"], chat_server.url)
    bob = await engines.start("bob", t["bob"], proxy.url)
    await alice.online()
    await bob.online()
    key = await group_with(alice, bob)

    proxy.reset()
    await until(lambda: bob.state is not ConnState.ONLINE, "bob to be offline")
    cids = [bob.engine.send(key, f"offline {i}").client_id for i in range(3)]
    meanwhile = alice.engine.send(key, "while bob was away")
    await until(lambda: alice.state_of(meanwhile.client_id) is SENT, "alice's message sent")
    assert all(bob.state_of(c) is OutState.PENDING for c in cids)

    proxy.pass_through()
    await until(lambda: all(bob.state_of(c) is SENT for c in cids), "bob's queue to be sent")
    want = ["while bob was away", "offline 0", "offline 1", "offline 2"]
    await until(lambda: bodies(alice, key) == want, "alice to get bob's queue in order")
    assert bodies(bob, key) == want
    for cid in cids:
        assert server_copies(chat_server.db_path, cid) == 1
    conv = key[1:]
    assert alice.engine.store.watermark(conv) == bob.engine.store.watermark(conv) == 5


async def test_removal_while_offline_fails_the_queued_message(
    chat_server: RunningServer, proxy: FaultProxy, engines: Engines
) -> None:
    t = chat_server.tokens
    alice = await engines.start("alice", t["alice"], chat_server.url)
    carol = await engines.start("carol", t["carol"], proxy.url)
    await alice.online()
    await carol.online()
    key = await group_with(alice, carol)

    proxy.reset()
    await until(lambda: carol.state is not ConnState.ONLINE, "carol to be offline")
    queued = carol.engine.send(key, "written before I knew").client_id
    rem = alice.engine.remove_member(key, "carol")
    await until(lambda: alice.state_of(rem.client_id) is SENT, "carol's removal to be stored")

    proxy.pass_through()
    await until(lambda: carol.state_of(queued) is OutState.FAILED, "the queued message to fail")
    failed = carol.engine.message(queued)
    assert failed is not None and failed.error == NOT_MEMBER_REASON
    assert not carol.engine.conversation(key).joined
    assert server_copies(chat_server.db_path, queued) == 0
    # Non-retryable: it stays failed, the rest of the engine goes on.
    await carol.online()
    assert carol.state_of(queued) is OutState.FAILED


async def test_a_pending_create_survives_a_restart_and_is_confirmed_once(
    chat_server: RunningServer, proxy: FaultProxy, engines: Engines
) -> None:
    t = chat_server.tokens
    bob = await engines.start("bob", t["bob"], chat_server.url)
    await bob.online()
    proxy.refuse()
    cfg = engines.config("alice", t["alice"], proxy.url)
    first = await engines.run(cfg, t["alice"])
    made = first.engine.create_group("durable", ["bob"])
    assert made.state is OutState.PENDING
    await engines.stop(first)

    proxy.pass_through()
    again = await engines.run(cfg, t["alice"])
    [pending] = [s for s in again.engine.conversations() if s.kind is ConvKind.GROUP]
    assert pending.peer == made.peer and pending.title == "durable"
    await until(lambda: again.state_of(made.client_id) is SENT, "the create to be confirmed")
    [replaced] = again.of(ConversationReplaced)
    assert replaced.old == made.peer and replaced.new is not None
    assert group_of(again) == replaced.new
    await until(lambda: has_group(bob), "bob to see the group")
    assert group_of(bob) == replaced.new
    assert server_copies(chat_server.db_path, made.client_id) == 1
    assert again.engine.outbox_count() == 0

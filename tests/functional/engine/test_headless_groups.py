"""``tui-chat headless`` and groups, as a real process against the real server: the
create/send/add/remove/rename/leave commands and the ``conversation`` events they cause."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.clientconf import client_config, write_client_toml
from harness.faultproxy import FaultProxy
from harness.waits import until
from tests.support.engines import Engines, server_copies
from tests.support.headless import HeadlessProc, is_event
from tests.support.wire import RunningServer
from tui_chat.core.models import group_key


def group_line(conv: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    """A ``conversation`` line about the group ``conv`` with ``fields``."""
    want = {"event": "conversation", "peer": group_key(conv), "kind": "group", **fields}
    return lambda line: all(line.get(k) == v for k, v in want.items())


async def test_group_commands_and_their_events(
    chat_server: RunningServer, engines: Engines, processes: list[HeadlessProc], tmp_path: Path
) -> None:
    bob = await engines.start("bob", chat_server.tokens["bob"], chat_server.url)
    await bob.online()
    cfg = client_config(tmp_path / "store", "alice", chat_server.tokens["alice"], chat_server.url)
    alice = await HeadlessProc.start(write_client_toml(tmp_path / "alice.toml", cfg))
    processes.append(alice)
    await alice.wait_line(is_event("connection", state="online"), "online")

    await alice.write({"cmd": "create", "id": 1, "title": "ops", "members": ["bob"]})
    ok = await alice.wait_line(is_event("ok", cmd="create"), "the create's ok")
    assert ok["id"] == 1 and ok["title"] == "ops" and ok["members"] == ["bob"]
    pending = ok["peer"]
    assert pending == "+" + ok["client_id"]
    shown = await alice.wait_line(is_event("message", peer=pending), "the pending create")
    assert (shown["kind"], shown["title"], shown["state"]) == ("created", "ops", "pending")
    replaced = await alice.wait_line(is_event("conversation_replaced", old=pending), "confirmed")
    key = replaced["new"]
    assert key.startswith("#")
    conv = key[1:]
    made = await alice.wait_line(group_line(conv, title="ops"), "the group's conversation line")
    assert made["members"] == ["alice", "bob"] and made["creator"] == "alice" and made["joined"]
    await until(lambda: any(s.peer == key for s in bob.engine.conversations()), "bob's group")

    await alice.write({"cmd": "send", "conv": conv, "body": "hello group"})
    sent = await alice.wait_line(is_event("ok", cmd="send"), "the send's ok")
    assert sent["conv"] == conv and "to" not in sent
    await alice.wait_line(is_event("state", client_id=sent["client_id"], state="sent"), "sent")
    await until(
        lambda: [m.body for m in bob.engine.messages(key)][-1:] == ["hello group"],
        "bob to get the group message",
    )

    await alice.write({"cmd": "add", "conv": conv, "user": "carol"})
    added = await alice.wait_line(is_event("ok", cmd="add"), "the add's ok")
    assert (added["conv"], added["user"]) == (conv, "carol")
    await alice.wait_line(group_line(conv, members=["alice", "bob", "carol"]), "carol in")
    await alice.write({"cmd": "remove", "conv": conv, "user": "carol"})
    await alice.wait_line(is_event("ok", cmd="remove"), "the remove's ok")
    await alice.write({"cmd": "rename", "conv": conv, "title": "ops 2"})
    await alice.wait_line(group_line(conv, title="ops 2", members=["alice", "bob"]), "renamed")
    # Bob's text mentions alice: the message line says so, the conversation counts it.
    bob.engine.send(key, "alice, look")
    said = await alice.wait_line(is_event("message", body="alice, look"), "bob's mention")
    assert said["mentions_me"] and said["kind"] == "text" and said["peer"] == key
    await alice.wait_line(group_line(conv, mentions=1), "the mention counted")
    await alice.write({"cmd": "read", "conv": conv})
    await alice.wait_line(group_line(conv, mentions=0, unread=0), "read")

    await alice.write({"cmd": "leave", "conv": conv})
    await alice.wait_line(is_event("ok", cmd="leave"), "the leave's ok")
    await alice.wait_line(group_line(conv, joined=False, members=["bob"]), "left")
    left = alice.matching(
        lambda line: line["event"] in ("message", "state") and line.get("kind") == "left"
    )
    assert [(m["sender"], m["user"]) for m in left][-1:] == [("alice", "alice")]

    await alice.write({"cmd": "send", "to": "bob", "conv": conv, "body": "both"})
    await alice.write({"cmd": "create", "title": " ", "members": []})
    await alice.write({"cmd": "send", "conv": pending, "body": "x"})
    await alice.wait_line(
        lambda _line: len(alice.matching(is_event("error", code="rejected"))) == 3,
        "three refused commands",
    )
    await alice.write({"cmd": "quit"})
    assert await alice.wait_exit() == 0


async def test_a_create_typed_offline_survives_a_kill_and_is_confirmed_once(
    chat_server: RunningServer, proxy: FaultProxy, processes: list[HeadlessProc], tmp_path: Path
) -> None:
    cfg = client_config(tmp_path / "store", "alice", chat_server.tokens["alice"], proxy.url)
    toml = write_client_toml(tmp_path / "alice.toml", cfg)
    proxy.refuse()
    first = await HeadlessProc.start(toml)
    processes.append(first)
    await first.write({"cmd": "create", "title": "later", "members": ["bob"]})
    ok = await first.wait_line(is_event("ok", cmd="create"), "the create's ok")
    pending = ok["peer"]
    shown = await first.wait_line(is_event("conversation", peer=pending), "the pending group")
    assert (shown["kind"], shown["conv"], shown["members"]) == ("group", None, ["alice", "bob"])
    await first.kill()

    proxy.pass_through()
    second = await HeadlessProc.start(toml)
    processes.append(second)
    replaced = await second.wait_line(is_event("conversation_replaced", old=pending), "confirmed")
    conv = replaced["new"][1:]
    await second.wait_line(group_line(conv, title="later", members=["alice", "bob"]), "the group")
    await second.close_stdin()
    assert await second.wait_exit() == 0, second.describe()
    assert len(second.matching(is_event("conversation_replaced"))) == 1
    assert server_copies(chat_server.db_path, ok["client_id"]) == 1


async def test_a_fresh_store_sends_to_a_group_it_learns_of_in_the_catch_up(
    chat_server: RunningServer, engines: Engines, processes: list[HeadlessProc], tmp_path: Path
) -> None:
    """A script's first line names a group its new store has not seen: the command waits
    for the catch-up (which brings the group) instead of failing "no such group"."""
    bob = await engines.start("bob", chat_server.tokens["bob"], chat_server.url)
    await bob.online()
    created = bob.engine.create_group("ops", ["alice"])
    del created
    await until(
        lambda: any(s.title == "ops" and s.conv for s in bob.engine.conversations()),
        "bob's group confirmed",
    )
    conv = next(s.conv for s in bob.engine.conversations() if s.title == "ops")
    assert conv is not None
    cfg = client_config(tmp_path / "fresh", "alice", chat_server.tokens["alice"], chat_server.url)
    alice = await HeadlessProc.start(write_client_toml(tmp_path / "alice.toml", cfg))
    processes.append(alice)
    # Written at once, before alice's engine has connected.
    await alice.write({"cmd": "send", "conv": conv, "body": "first words"})
    sent = await alice.wait_line(is_event("ok", cmd="send"), "the send's ok, not an error")
    await alice.wait_line(is_event("state", client_id=sent["client_id"], state="sent"), "sent")
    await until(
        lambda: [m.body for m in bob.engine.messages(group_key(conv))][-1:] == ["first words"],
        "bob to get it",
    )

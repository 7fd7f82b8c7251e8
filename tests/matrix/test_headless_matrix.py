"""``tui-chat headless`` with ``protocol = "matrix"``: a real process against Synapse.

A password login once (the token and device kept in the store, the same device after a
restart), ``send {conv}`` and ``send {to}`` (a DM room made with is_direct and recorded in
m.direct), and a client SIGKILLed after the outbox commit that sends on restart, once.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from harness.clientconf import write_client_toml
from harness.faultproxy import FaultProxy
from harness.synapse import Synapse
from harness.waits import until
from tests.matrix.support import matrix_config, room_texts, room_with, start
from tests.support.engines import Engines
from tests.support.headless import HeadlessProc, is_event
from tui_chat.core.config import AccountSection
from tui_chat.matrix.http import MatrixHttp


def _epoch(store_dir: Path) -> str:
    (db,) = store_dir.glob("*.sqlite3")
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
    return str(row[0])


async def test_headless_password_login_kill_after_commit_and_dm(
    synapse: Synapse, engines: Engines, processes: list[HeadlessProc], tmp_path: Path
) -> None:
    alice, bob = synapse.register("alice"), synapse.register("bob")
    room = await room_with(synapse, alice, bob, name="Team")
    async with FaultProxy("127.0.0.1", synapse.port) as proxy:
        cfg = matrix_config(tmp_path, alice, f"http://127.0.0.1:{proxy.port}")
        cfg.account = AccountSection(user=alice.user_id, password=alice.password)
        toml = write_client_toml(tmp_path / "alice.toml", cfg)
        store_dir = Path(cfg.storage.dir or "")

        first = await HeadlessProc.start(toml)
        processes.append(first)
        await first.wait_line(is_event("connection", state="online"), "online", 30)
        epoch = _epoch(store_dir)
        proxy.refuse()
        proxy.close_all()
        await first.write({"cmd": "send", "conv": room, "body": "typed, Enter, crash"})
        ok = await first.wait_line(is_event("ok", cmd="send"), "the send's ok")
        cid = ok["client_id"]
        shown = await first.wait_line(is_event("message", client_id=cid), "the pending message")
        assert (shown["state"], shown["own"]) == ("pending", True)
        await first.kill()
        assert await room_texts(synapse, alice, room) == []

        proxy.pass_through()
        second = await HeadlessProc.start(toml)
        processes.append(second)
        sent = await second.wait_line(is_event("state", client_id=cid, state="sent"), "sent", 30)
        assert sent["seq"] is not None
        assert _epoch(store_dir) == epoch  # the same device: no second login, no new history
        assert await room_texts(synapse, alice, room) == [(alice.user_id, "typed, Enter, crash")]

        await second.write({"cmd": "send", "to": bob.user_id, "body": "just you and me"})
        ok = await second.wait_line(is_event("ok", cmd="send"), "the DM's ok")
        dm = await second.wait_line(
            is_event("state", client_id=ok["client_id"], state="sent"), "the DM sent", 30
        )
        assert dm["peer"] == bob.user_id

    # The DM is a room made for it, invited with is_direct and recorded in m.direct.
    http = MatrixHttp(synapse.url, token=bob.access_token)
    try:
        invites = (await http.sync(None, timeout_ms=0)).rooms.invite
        (dm_room,) = invites
        await http.join(dm_room)
    finally:
        await http.aclose()
    b = await start(engines, bob, synapse.url)
    await b.online(30)
    await until(
        lambda: any(m.body == "just you and me" for m in b.engine.messages(alice.user_id)),
        "bob reads the DM under alice's name",
        within=30,
    )

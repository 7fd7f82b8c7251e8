"""Read receipts on screen: ✓✓ when the peer has read a direct message, and in a group
"read by n" on the selected message, with the names on w. The real app and server; bob
and carol are raw websocket clients that say what they read."""

from __future__ import annotations

from pathlib import Path

from tests.support.ui import (
    flat,
    last_own,
    online,
    open_with,
    own_state,
    running_app,
    screen_text,
    type_and_send,
    wait_until,
)
from tests.support.wire import RunningServer, login, recv_until, send_frame
from tui_chat import protocol as p
from tui_chat.core.models import OutState


async def test_receipts_show_who_has_read(chat_server: RunningServer, tmp_path: Path) -> None:
    bob, *_ = await login(chat_server.url, "bob", chat_server.tokens["bob"])
    try:
        async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path) as (
            app,
            pilot,
        ):
            await online(app, pilot)
            await open_with(app, pilot, "bob")
            await type_and_send(pilot, "did you read this?")
            cid = last_own(app).client_id
            await wait_until(pilot, lambda: own_state(app, cid) is OutState.SENT, "sent")
            assert "✓✓" not in screen_text(app)
            got, _ = await recv_until(bob, p.Message)
            await send_frame(bob, p.Read(conv=got.conv, seq=got.seq))
            await wait_until(pilot, lambda: "you ✓✓" in screen_text(app), "✓✓")

            await type_and_send(pilot, "/create Trip: bob, carol")
            await wait_until(pilot, lambda: (app.peer or "").startswith("#"), "the group")
            await type_and_send(pilot, "hello group")
            gid = last_own(app).client_id
            await wait_until(pilot, lambda: own_state(app, gid) is OutState.SENT, "sent")
            msg = last_own(app)
            await pilot.press("up")  # select it
            await wait_until(pilot, lambda: "read by nobody yet" in screen_text(app), "nobody")
            await send_frame(bob, p.Read(conv=msg.conv or "", seq=msg.seq or 0))
            await wait_until(pilot, lambda: "read by 1 · w: who" in screen_text(app), "read by 1")
            await pilot.press("w")
            await wait_until(
                pilot, lambda: "Read by: bob (as far as" in flat(screen_text(app)), "names"
            )
    finally:
        await bob.close()

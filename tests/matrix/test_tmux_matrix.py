"""tui-chat in a real terminal (tmux) on a real Synapse: the room shows, a message goes
◷ → ✓, a homeserver that stops answering turns it ✗ with retry and give-up, and r sends
it once the homeserver is back. The config file is the one a user would write."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from harness.synapse import Synapse
from tests.functional.ui.test_tmux import START_WITHIN, TMUX, start_tmux
from tests.matrix.support import room_texts, room_with
from tui_chat.matrix.http import MatrixHttp

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


def header_above(screen: str, body: str) -> str:
    """The bubble header above ``body`` in the message pane (right of the sidebar, whose
    preview also shows the body)."""
    pane = [line.split("▕", 1)[1] if "▕" in line else "" for line in screen.splitlines()]
    for i, line in enumerate(pane):
        if body in line and i > 0:
            return pane[i - 1]
    return ""


async def test_tui_on_synapse_in_a_real_terminal(synapse: Synapse, tmp_path: Path) -> None:
    alice, bob = synapse.register("alice"), synapse.register("bob")
    room = await room_with(synapse, bob, alice, name="Tmux room")
    http = MatrixHttp(synapse.url, token=bob.access_token)
    try:
        await http.send_message(room, "hello-1", {"msgtype": "m.text", "body": "hello from bob"})
    finally:
        await http.aclose()
    config = tmp_path / "config.toml"
    config.write_text(
        f"""[server]
protocol = "matrix"
url = "{synapse.url}"

[account]
user = "{alice.user_id}"
token = "{alice.access_token}"

[sync]
freshness_window = 4.0
ping_interval = 1.0
ping_timeout = 1.0
""",
        encoding="utf-8",
    )
    tmux = start_tmux(tmp_path, "--config", str(config))
    try:
        tmux.wait(lambda s: "Tmux room" in s and "hello from bob" in s, "the room", START_WITHIN)
        tmux.keys("hi from tmux", literal=True)
        tmux.keys("Enter")
        tmux.wait(lambda s: "you ✓" in header_above(s, "hi from tmux"), "✓ (sent)")

        synapse.pause()  # SIGSTOP: the homeserver stops answering, sockets stay open
        try:
            tmux.keys("while it sleeps", literal=True)
            tmux.keys("Enter")
            tmux.wait(lambda s: "you ◷" in header_above(s, "while it sleeps"), "◷")
            screen = tmux.wait(
                lambda s: "you ✗" in header_above(s, "while it sleeps") and "✗1" in s,
                "✗ after the window, in the view and the list",
                30,
            )
            flat = " ".join(screen.replace("▕", " ").split())
            assert "r retry" in flat and "d give up" in flat, screen
        finally:
            synapse.resume()
        tmux.keys("Up")  # select it (the newest)
        tmux.keys("r")
        tmux.wait(lambda s: "you ✓" in header_above(s, "while it sleeps"), "✓ after r", 30)
    finally:
        tmux.kill()
    # On the homeserver: each message once.
    texts = [body for _sender, body in await room_texts(synapse, bob, room)]
    assert texts.count("hi from tmux") == 1 and texts.count("while it sleeps") == 1
    await asyncio.sleep(0)

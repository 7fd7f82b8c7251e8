"""The Textual app under Pilot with a real engine, and what a test reads off the screen.

Every wait is bounded: :func:`wait_until` (the one wait, :func:`harness.waits.until`, with
Pilot's pause) fails the test with a description instead of hanging.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from harness.clientconf import client_config
from harness.serverproc import ServerProcess
from harness.waits import WAIT, stays, until
from tests.support.wire import RunningServer, db_rows, login, send_message
from tui_chat.core.config import UiSection
from tui_chat.core.engine import Engine
from tui_chat.core.models import ChatMessage, ConnState, Event, OutState
from tui_chat.ui.app import ChatApp
from tui_chat.ui.widgets import StatusBar

SIZE = (120, 36)
FRESHNESS = 2.0
PENDING, SENT, FAILED, GIVEN_UP = (
    OutState.PENDING,
    OutState.SENT,
    OutState.FAILED,
    OutState.GIVEN_UP,
)


# ---------------------------------------------------------------- harness


# The UI tests' timers: FAST_SYNC with a short freshness window and a quick ack timeout, so
# that a message fails (✗) within a couple of seconds of an outage.
UI_SYNC: dict[str, Any] = {
    "freshness_window": FRESHNESS,
    "backoff_cap": 0.3,
    "ping_interval": 0.3,
    "ping_timeout": 0.3,
    "ack_timeout": 1.0,
}


def make_engine(url: str, token: str, store_dir: Path, user: str = "alice", **sync: Any) -> Engine:
    return Engine(client_config(store_dir, user, token, url, **{**UI_SYNC, **sync}), token)


@contextlib.asynccontextmanager
async def running_app(
    url: str,
    token: str,
    store_dir: Path,
    *,
    user: str = "alice",
    keymap: dict[str, str] | None = None,
    ui: UiSection | None = None,
    run_engine: bool = True,
    events: list[Event] | None = None,
    **sync: Any,
) -> AsyncIterator[tuple[ChatApp, Pilot[int]]]:
    """A ChatApp for ``user`` on ``url`` under Pilot; the engine's store is closed at the end.

    ``events`` (if given) collects every engine event, subscribed before the app starts, so a
    test can see states that were on screen only briefly.
    """
    engine = make_engine(url, token, store_dir, user, **sync)
    if events is not None:
        engine.subscribe(events.append)
    app = ChatApp(engine, ui=ui or UiSection(bell=False), keymap=keymap, run_engine=run_engine)
    try:
        # Toasts are part of what the user sees (and of the untrusted-text surface).
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            yield app, pilot
    finally:
        engine.close()


async def wait_until(
    pilot: Pilot[Any], cond: Callable[[], object], what: str, within: float = WAIT
) -> None:
    """:func:`harness.waits.until`, letting the app process its messages between polls."""
    await until(cond, what, within, pause=pilot.pause)


async def holds(pilot: Pilot[Any], cond: Callable[[], object], what: str, duration: float) -> None:
    """:func:`harness.waits.stays`, letting the app process its messages between polls."""
    await stays(cond, what, duration, pause=pilot.pause)


def screen_text(app: ChatApp) -> str:
    """The characters on the active screen (all layers, toasts included), one line per row."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def flat(text: str) -> str:
    """``text`` with every run of whitespace (line ends of wrapped lines too) as one space."""
    return " ".join(text.split())


def screen_segments(app: ChatApp) -> list[str]:
    """The raw text of every segment the compositor would send to the terminal."""
    return [
        segment.text
        for strip in app.screen._compositor.render_strips()
        for segment in strip
        if not segment.control
    ]


def status_line(app: ChatApp) -> str:
    return str(app.query_one(StatusBar).render())


def item(app: ChatApp, client_id: str) -> ChatMessage | None:
    for m in app.view.items:
        if m.client_id == client_id:
            return m
    return None


def bubble_text(app: ChatApp, client_id: str) -> str:
    """The lines the message view paints for one message (all of them, visible or not)."""
    view = app.view
    for i, m in enumerate(view.items):
        if m.client_id == client_id:
            return "\n".join(strip.text for strip in view._strips(i))
    raise AssertionError(f"{client_id} is not in the message view")


def own_state(app: ChatApp, client_id: str) -> OutState | None:
    m = app.engine.message(client_id)
    return None if m is None else m.state


def copies_on_server(db_path: Path, client_id: str) -> int:
    return int(
        db_rows(db_path, "SELECT COUNT(*) FROM messages WHERE client_id=?", (client_id,))[0][0]
    )


async def type_and_send(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*text, "enter")


def last_own(app: ChatApp) -> ChatMessage:
    own = [m for m in app.view.items if m.own]
    assert own, "no own message in the view"
    return own[-1]


async def online(app: ChatApp, pilot: Pilot[Any]) -> None:
    await wait_until(pilot, lambda: app.engine.status.state is ConnState.ONLINE, "online")


async def open_with(app: ChatApp, pilot: Pilot[Any], peer: str) -> None:
    """Start a conversation through the ctrl+o dialog, as a user would."""
    await pilot.press("ctrl+o")
    await wait_until(pilot, lambda: type(app.screen).__name__ == "NewConversationScreen", "dialog")
    await pilot.press(*peer, "enter")
    await wait_until(pilot, lambda: app.peer == peer, f"the conversation with {peer} open")
    await wait_until(pilot, lambda: app.focused is app.composer, "the composer focused")


async def fail_one(
    app: ChatApp, pilot: Pilot[Any], server: ServerProcess, body: str, peer: str = "bob"
) -> str:
    """Kill the server, send ``body`` and wait until it shows ✗; returns its client_id."""
    await server.akill()
    await wait_until(
        pilot, lambda: app.engine.status.state is not ConnState.ONLINE, "the outage noticed"
    )
    await type_and_send(pilot, body)
    msg = last_own(app)
    assert msg.body == body
    cid = msg.client_id
    await wait_until(
        pilot, lambda: own_state(app, cid) is FAILED, "the message failed", FRESHNESS + WAIT
    )
    await wait_until(pilot, lambda: "✗" in bubble_text(app, cid), "✗ painted")
    return cid


async def peer_sends(server: RunningServer, sender: str, to: str, *bodies: str) -> None:
    """``sender`` sends ``bodies`` to ``to`` over its own websocket, each acked."""
    ws, *_ = await login(server.url, sender, server.tokens[sender])
    try:
        for i, body in enumerate(bodies):
            ack = await send_message(ws, f"{sender}-{i}-{abs(hash(body)) % 10**8}", to, body)
            assert type(ack).__name__ == "Ack", ack
    finally:
        await ws.close()

"""Make the SVG screenshots in screenshots/ from real app states.

    python screenshots/make_screenshots.py [--out DIR] [--size 110x32]

Everything is real: the embedded demo (a local server, the fault proxy and the demo
peers), the user's engine and the app, driven by key presses through Textual's Pilot.
Demo data goes to a temporary directory, never to the user's data dir.

    demo.svg     a message sent to ada: ◷ then ✓, and ada's answer
    offline.svg  F6 cut the network: status line offline (reason, next retry), a message ◷
    failed.svg   that message failed after the demo's 20 s freshness window, with its hint
    help.svg     the help screen (F1)
    search.svg   ctrl+f: messages found in the local store, by conversation and date

It takes about half a minute: the failure waits for the demo's real freshness window.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from tui_chat.core.engine import Engine
from tui_chat.core.models import ChatMessage, ConnState, OutState
from tui_chat.demo import DEMO_SYNC, Demo
from tui_chat.ui.app import ChatApp
from tui_chat.ui.demo_app import DemoApp
from tui_chat.ui.screens import HelpScreen
from tui_chat.ui.search_screen import SearchScreen

HERE = Path(__file__).resolve().parent
# The failure needs the freshness window, plus the outbox's one-second tick and slack.
FAIL_WITHIN = DEMO_SYNC.freshness_window + 15.0


class Timeout(Exception):
    pass


async def until(cond: Callable[[], object], what: str, within: float = 15.0) -> None:
    """Poll ``cond`` (the app keeps running meanwhile); fail clearly after ``within`` s."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise Timeout(f"gave up after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def own(engine: Engine, peer: str, body: str) -> ChatMessage | None:
    for msg in engine.messages(peer, None, 50):
        if msg.own and msg.body == body:
            return msg
    return None


def retry_left(engine: Engine) -> float:
    """Seconds until the next connection attempt while offline, else -1."""
    status = engine.status
    if status.state is not ConnState.OFFLINE or status.retry_in is None:
        return -1.0
    return status.since + status.retry_in - time.time()


def answered_after(engine: Engine, peer: str, body: str) -> bool:
    """The peer has written something after our message ``body`` was confirmed."""
    page = engine.messages(peer, None, 50)
    mine = [m.seq for m in page if m.own and m.body == body and m.seq is not None]
    return bool(mine) and any(not m.own and m.seq is not None and m.seq > mine[0] for m in page)


async def type_and_send(pilot: Pilot[int], text: str) -> None:
    await pilot.press(*text)
    await pilot.press("enter")
    await pilot.pause()


async def settle(pilot: Pilot[int]) -> None:
    """Let pending messages and animations finish; no blinking cursor in the picture."""
    app = pilot.app
    assert isinstance(app, ChatApp)
    app.composer.cursor_blink = False
    await pilot.pause(0.3)
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


def screen_text(app: ChatApp) -> str:
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def save(app: ChatApp, out: Path, name: str) -> None:
    path = app.save_screenshot(name, path=str(out))
    print(f"wrote {path}")


async def shoot(out: Path, size: tuple[int, int], root: Path) -> None:
    demo = Demo(root=root)
    engine = await demo.start()
    app = DemoApp(engine, demo)
    try:
        # Toasts are part of these states (failure, lost connection): run_test hides
        # them unless asked.
        async with app.run_test(size=size, notifications=True) as pilot:
            # The demo peers greet the new user; wait for all three conversations.
            await until(lambda: engine.status.state is ConnState.ONLINE, "the demo to connect")
            await until(
                lambda: {"ada", "grace", "linus"} <= set(app.conv_list.order),
                "the demo peers' greetings in the conversation list",
            )
            order = app.conv_list.order
            await pilot.press(f"alt+{order.index('ada') + 1}")
            await until(lambda: app.peer == "ada", "ada's conversation to open")

            # demo.svg: a message that became ✓, and ada's answer to it.
            hello = "Hello ada! Is this message really stored?"
            await type_and_send(pilot, hello)
            await until(
                lambda: (m := own(engine, "ada", hello)) is not None and m.state is OutState.SENT,
                "the first message to be acked (✓)",
            )
            await until(lambda: answered_after(engine, "ada", hello), "ada's answer")
            await settle(pilot)
            save(app, out, "demo.svg")

            # search.svg: ctrl+f over the local store, results by conversation and date.
            await pilot.press("ctrl+f")
            await until(lambda: isinstance(app.screen, SearchScreen), "the search screen")
            await pilot.press(*"demo")
            await until(lambda: "found" in screen_text(app), "search results")
            await settle(pilot)
            save(app, out, "search.svg")
            await pilot.press("escape")
            await until(lambda: not isinstance(app.screen, SearchScreen), "search closed")

            # offline.svg: F6 blackholes the link; the message stays ◷ while the
            # engine notices (keepalive) and then retries with backoff.
            await pilot.press("f6")
            late = "Are you still there?"
            await type_and_send(pilot, late)
            await until(
                lambda: engine.status.state is not ConnState.ONLINE,
                "the engine to notice the cut (keepalive timeout)",
            )
            # Offline between two attempts, with a countdown worth showing ("retry n in
            # 2 s" rather than "in 0 s"); the backoff's jitter decides when that is.
            try:
                await until(lambda: retry_left(engine) >= 1.0, "a visible retry countdown", 10.0)
            except Timeout:
                await until(lambda: engine.status.state is ConnState.OFFLINE, "offline", 10.0)
            # The "connection lost" toast would cover the status line, which is what this
            # picture is about (failed.svg shows a toast).
            app.clear_notifications()
            await settle(pilot)
            save(app, out, "offline.svg")

            # failed.svg: after the freshness window the message fails and says why,
            # with the keys that retry, give it up or edit it.
            await until(
                lambda: (m := own(engine, "ada", late)) is not None and m.state is OutState.FAILED,
                "the cut-off message to fail",
                within=FAIL_WITHIN,
            )
            # The failure toast comes after a short coalescing delay; show it too.
            await pilot.pause(1.2)
            await settle(pilot)
            save(app, out, "failed.svg")

            # help.svg (without the failure toast, which would sit on top of it)
            app.clear_notifications()
            await pilot.press("f1")
            await until(lambda: isinstance(app.screen, HelpScreen), "the help screen")
            await settle(pilot)
            save(app, out, "help.svg")
            await pilot.press("escape")
    finally:
        await demo.stop()
        engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where the SVGs go")
    parser.add_argument("--size", default="110x32", help="terminal size, COLUMNSxROWS")
    args = parser.parse_args(argv)
    cols, rows = (int(n) for n in args.size.lower().split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="tui-chat-shots-") as tmp:
        try:
            asyncio.run(shoot(args.out, (cols, rows), Path(tmp)))
        except Timeout as exc:
            print(f"make_screenshots: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

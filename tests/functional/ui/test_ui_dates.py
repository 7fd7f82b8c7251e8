"""Dates in the view: day separators, the full date on the selected message, and a bubble
that keeps the time it was written when the server confirms it later.

The first test paints a real store with messages of several days (no server: the times
must be chosen); the second sends through a real server process that is down for a while.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from pathlib import Path

from harness.clientconf import client_config
from harness.serverproc import ServerProcess
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
from tui_chat.core.models import ConnState, OutState
from tui_chat.core.store import LocalStore
from tui_chat.ui import dates


def ms(d: datetime) -> int:
    return int(d.timestamp() * 1000)


async def test_day_separators_and_the_full_date_on_selection(tmp_path: Path) -> None:
    now = datetime.now()
    today_noon = datetime.combine(date.today(), datetime.min.time()) + timedelta(hours=12)
    older = today_noon - timedelta(days=40)
    yesterday = today_noon - timedelta(days=1)
    # Today's message a minute ago at most (never in the future, never yesterday).
    today = max(now - timedelta(minutes=1), datetime.combine(date.today(), datetime.min.time()))
    times = [older, older + timedelta(minutes=5), yesterday, today]
    url = "ws://127.0.0.1:9"  # never dialled: the engine does not run
    store = LocalStore(client_config(tmp_path / "a", "alice", "x", url).store_path(), "alice")
    store.ensure_conversation("bob", "c1")
    for seq, t in enumerate(times, 1):
        store.insert_message("c1", seq, "bob", "alice", f"b{seq}", f"message {seq}", ms(t))
    store.advance_watermark("c1")
    store.close()
    async with running_app(url, "x", tmp_path / "a", run_engine=False) as (
        app,
        pilot,
    ):
        app.open_conversation("bob")
        older_label = dates.day_label(ms(older))
        await wait_until(pilot, lambda: "message 4" in screen_text(app), "the messages")
        screen = flat(screen_text(app))
        # One separator per day, above its first message, in order; none between the two
        # messages of the same day.
        marks = [older_label, "message 1", "message 2", "Yesterday", "message 3", "Today"]
        positions = [screen.index(m) for m in marks]
        assert positions == sorted(positions), screen
        assert screen.count(older_label) == 1
        assert screen.count("── Today ──") == 1 and screen.count("── Yesterday ──") == 1
        # Selected: the full date and time, seconds too.
        app.view.focus()
        app.view.select_last()
        await wait_until(
            pilot, lambda: dates.full(ms(today)) in screen_text(app), "the full date shown"
        )


async def test_a_bubble_keeps_the_time_it_was_written(
    server_process: ServerProcess, tmp_path: Path
) -> None:
    # A long freshness window: the message waits out the outage instead of failing.
    async with running_app(
        server_process.url, server_process.tokens["alice"], tmp_path, freshness_window=120.0
    ) as (app, pilot):
        store_path = app.engine.config.store_path()
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        await server_process.akill()
        await wait_until(pilot, lambda: app.engine.status.state is not ConnState.ONLINE, "down")
        await type_and_send(pilot, "written while the server was down")
        msg = last_own(app)
        written = msg.written
        assert written is not None and msg.ts == written
        # Down for more than a second, so the server's time differs from the written one.
        await wait_until(pilot, lambda: time.time() * 1000 > written + 1500, "a second passed")
        await server_process.astart()
        await wait_until(pilot, lambda: own_state(app, msg.client_id) is OutState.SENT, "sent", 30)
        sent = last_own(app)
        assert sent.ts >= written + 1000  # the server's time
        assert sent.written == written  # what the bubble shows did not move
        assert dates.shown_ts(sent) == written
        app.view.focus()
        app.view.select_last()
        await wait_until(
            pilot, lambda: "on the server" in flat(screen_text(app)), "the server's time shown"
        )
        assert dates.full(written) in flat(screen_text(app))
    # After a restart, read back from the store, it still shows the written time.
    store = LocalStore(store_path, "alice")
    try:
        page = store.page("bob", None, 10)
        assert page[-1].written == written and page[-1].ts == sent.ts
    finally:
        store.close()

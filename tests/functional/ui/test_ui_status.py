"""The status line tells the truth: silence is shown as silence, not as "online"."""

from __future__ import annotations

import re
from pathlib import Path

from harness.faultproxy import FaultProxy
from tests.support.ui import online, running_app, status_line, wait_until
from tests.support.wire import RunningServer


def silent_seconds(line: str) -> int | None:
    m = re.search(r"no answer for (\d+) s", line)
    return None if m is None else int(m.group(1))


async def test_no_answer_for_n_seconds_counts_up(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    async with (
        FaultProxy("127.0.0.1", chat_server.port) as proxy,
        # Slow enough to see the silence before the link is declared dead.
        running_app(
            proxy.url,
            chat_server.tokens["alice"],
            tmp_path / "a",
            ping_interval=1.0,
            ping_timeout=6.0,
        ) as (app, pilot),
    ):
        await online(app, pilot)
        assert "● online" in status_line(app)
        proxy.blackhole()
        await wait_until(
            pilot, lambda: silent_seconds(status_line(app)) is not None, "no answer for N s"
        )
        assert "● online" not in status_line(app)
        first = silent_seconds(status_line(app))
        assert first is not None
        # The StatusBar repaints itself every second, with no engine event needed.
        await wait_until(
            pilot,
            lambda: (n := silent_seconds(status_line(app))) is not None and n > first,
            "the count going up",
        )
        proxy.pass_through()

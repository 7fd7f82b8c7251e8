"""SVG snapshots of the main states of the app (pytest-textual-snapshot).

Every state is built from a real :class:`LocalStore` filled with fixed timestamps and a
real :class:`Engine` whose connection is not started (``run_engine=False``), so the
screen is the same on every run: times render in UTC, the status line's clock is
frozen, and the composer's cursor does not blink.

The baselines live in ``tests/__snapshots__/test_snapshots/``. After a deliberate UI
change, regenerate them with ``pytest tests/test_snapshots.py --snapshot-update`` and
look at the new SVGs before committing them.
"""

from __future__ import annotations

import os
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from harness.waits import until
from tests.support.ui import screen_text
from tui_chat.core.config import AccountSection, ClientConfig, ServerSection, StorageSection
from tui_chat.core.engine import Engine
from tui_chat.core.models import ConnectionStatus, ConnState, OutState
from tui_chat.core.store import LocalStore, OutboxRow
from tui_chat.protocol import MessageKind
from tui_chat.ui import widgets
from tui_chat.ui.app import ChatApp
from tui_chat.ui.demo_app import DemoApp
from tui_chat.ui.screens import HelpScreen

USER = "you"
SIZE = (100, 30)
# 2023-11-14 22:13:20 UTC. Message times are this plus whole minutes.
T0 = 1_700_000_000_000
# The frozen wall clock of the status line ("retry in N s" counts down from it).
NOW = 1_700_010_000.0
MINUTE = 60_000

# pytest-textual-snapshot's fixture: compare(app, press=..., terminal_size=..., run_before=...)
SnapCompare = Callable[..., bool]


# ---------------------------------------------------------------- determinism


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Message times render as local HH:MM: make local time UTC for the test."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture(autouse=True)
def frozen_status_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The status line computes "retry in N s" from time.time(); freeze it there only."""
    monkeypatch.setattr(widgets, "time", types.SimpleNamespace(time=lambda: NOW))


async def steady(pilot: Pilot[int]) -> None:
    """Stop the composer's cursor from blinking, so the frame does not depend on timing."""
    app = pilot.app
    assert isinstance(app, ChatApp)
    app.composer.cursor_blink = False
    await pilot.pause()


class StubDemo:
    """Stands in for :class:`tui_chat.demo.Demo`: the app only reads ``outage`` and
    calls ``toggle_outage``, and live demo bots would make the snapshot vary."""

    outage = False

    def toggle_outage(self) -> bool:
        self.outage = not self.outage
        return self.outage


# ---------------------------------------------------------------- seeded state


class Seed:
    """A local store with hand-made history, and the engine built on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = LocalStore(root / "you.sqlite3", USER)
        self.engine: Engine | None = None

    def conversation(self, peer: str, messages: list[tuple[str, str]], start: int) -> None:
        """Confirmed messages (sender, body), one minute apart from ``T0 + start`` minutes."""
        conv = f"conv-{peer}"
        self.store.ensure_conversation(peer, conv)
        for seq, (sender, body) in enumerate(messages, 1):
            to = peer if sender == USER else USER
            ts = T0 + (start + seq) * MINUTE
            self.store.insert_message(conv, seq, sender, to, f"{peer}-{seq}", body, ts)
        self.store.advance_watermark(conv)
        self.store.commit()

    def unsent(
        self,
        client_id: str,
        peer: str,
        body: str,
        minute: int,
        *,
        state: OutState = OutState.PENDING,
        error: str | None = None,
    ) -> None:
        """An outbox row. A pending one is fresh (its window starts now), so the engine
        does not expire it on start; its displayed time is still the fixed one."""
        self.store.add_outbox(
            OutboxRow(
                client_id,
                peer,
                body,
                created_at=T0 + minute * MINUTE,
                ord=self.store.next_ord(),
                attempts=1,
                state=state,
                error=error,
                fresh_since=time.time_ns() // 1_000_000,
            )
        )

    def group(self, conv: str, events: list[dict[str, object]], start: int) -> str:
        """A group from its confirmed events (p.Message fields), one minute apart."""
        key = "#" + conv
        self.store.ensure_conversation(key, conv)
        for seq, fields in enumerate(events, 1):
            ts = T0 + (start + seq) * MINUTE
            extra = {k: v for k, v in fields.items() if k not in ("sender", "body")}
            self.store.insert_message(
                conv,
                seq,
                str(fields["sender"]),
                "",
                f"{conv}-{seq}",
                str(fields.get("body", "")),
                ts,
                **extra,  # type: ignore[arg-type]
            )
        self.store.recompute_group(key, conv)
        self.store.advance_watermark(conv)
        self.store.commit()
        return key

    def build(self, status: ConnectionStatus) -> Engine:
        config = ClientConfig(
            account=AccountSection(user=USER, token="snapshot-token"),
            # Never contacted: the app runs with run_engine=False.
            server=ServerSection(url="ws://127.0.0.1:9"),
            storage=StorageSection(dir=str(self.root)),
        )
        self.engine = Engine(config, "snapshot-token", store=self.store)
        # Test-only: Engine has no public setter for its status (it owns the connection).
        # Set before the app subscribes, so no "connection lost" toast is scheduled.
        self.engine._set_status(status)
        return self.engine


@pytest.fixture
def seed(tmp_path: Path) -> Iterator[Seed]:
    s = Seed(tmp_path)
    yield s
    if s.engine is not None:
        s.engine.close()
    else:
        s.store.close()


ONLINE = ConnectionStatus(ConnState.ONLINE, since=NOW)
OFFLINE = ConnectionStatus(
    ConnState.OFFLINE,
    attempt=3,
    retry_in=12.0,
    reason="server unreachable (connection refused)",
    since=NOW,
)
FAILURE = "server unreachable (connection refused)"


def two_conversations(seed: Seed) -> None:
    """grace: three unread messages an hour ago; ada: a read exchange, the newest."""
    seed.conversation(
        "grace",
        [
            ("grace", "Hello from a slow peer: my answers take a few seconds."),
            ("grace", "Are you there?"),
            ("grace", "Ping me when you are back."),
        ],
        start=0,
    )
    seed.conversation(
        "ada",
        [
            ("ada", "Hi! Write me something."),
            (USER, "Hello ada, how are you?"),
            ("ada", "Fine, thanks. Every message is stored locally before it leaves."),
            (USER, "And a ✓ means the server has committed it?"),
            ("ada", "Exactly."),
        ],
        start=60,
    )


# ---------------------------------------------------------------- snapshots


def test_main_screen(snap_compare: SnapCompare, seed: Seed) -> None:
    """Two conversations: ada open (own ✓ and peer messages), grace with 3 unread; online."""
    two_conversations(seed)
    app = ChatApp(seed.build(ONLINE), run_engine=False)
    assert snap_compare(app, terminal_size=SIZE, run_before=steady)


def test_failed_message_with_hint(snap_compare: SnapCompare, seed: Seed) -> None:
    """A failed own message with its reason and keys, and one held behind it."""
    two_conversations(seed)
    seed.unsent(
        "failed-1", "ada", "This one did not make it", 70, state=OutState.FAILED, error=FAILURE
    )
    seed.unsent("held-1", "ada", "And this waits behind it", 71)
    app = ChatApp(seed.build(ONLINE), run_engine=False)
    assert snap_compare(app, terminal_size=SIZE, run_before=steady)


def test_offline_status(snap_compare: SnapCompare, seed: Seed) -> None:
    """Status line offline with the reason and the next retry; a message stays ◷."""
    two_conversations(seed)
    seed.unsent("pending-1", "ada", "Still there?", 70)
    app = ChatApp(seed.build(OFFLINE), run_engine=False)
    assert snap_compare(app, terminal_size=SIZE, run_before=steady)


def test_help_screen(snap_compare: SnapCompare, seed: Seed) -> None:
    """F1 opens the help: message marks and every binding."""
    two_conversations(seed)
    app = ChatApp(seed.build(ONLINE), run_engine=False)

    async def open_help(pilot: Pilot[int]) -> None:
        await steady(pilot)
        await pilot.press("f1")
        # The help screen is pushed, then laid out: wait for its text before the snapshot.
        await until(
            lambda: (
                isinstance(pilot.app.screen, HelpScreen)
                and "tui-chat keys" in screen_text(pilot.app)
            ),
            "the help screen painted",
            pause=pilot.pause,
        )
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 36), run_before=open_help)


def test_group(snap_compare: SnapCompare, seed: Seed) -> None:
    """A group: coloured sender names, membership lines, a mention, the member panel, a day
    separator, and "read by 2" on the selected own message."""
    two_conversations(seed)
    K = MessageKind
    seed.group(
        "g-trip",
        [
            {"sender": "ada", "kind": K.CREATED, "title": "Weekend trip",
             "members": ["ada", USER, "grace", "linus"]},
            {"sender": "ada", "body": "Saturday at 9, at the station?"},
            {"sender": "grace", "body": "Works for me. you, can you bring the map?"},
            {"sender": USER, "body": "Yes, I have it."},
            {"sender": "ada", "kind": K.REMOVED, "user": "linus"},
            {"sender": "ada", "kind": K.ADDED, "user": "mae"},
            {"sender": "mae", "body": "Thanks for adding me!"},
        ],
        start=120,
    )  # fmt: skip
    # Receipts from the server: ada and grace have read up to "Yes, I have it." (seq 4).
    for reader in ("ada", "grace"):
        seed.store.set_read_from_server("g-trip", reader, 4)
    seed.store.commit()
    app = ChatApp(seed.build(ONLINE), run_engine=False)

    async def open_group(pilot: Pilot[int]) -> None:
        await steady(pilot)
        await pilot.press("alt+3")  # grace, ada, then the group: first contact first
        await steady(pilot)
        # Select the own message: its header says who has read it.
        await pilot.press("up", "up", "up", "up")
        await steady(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_group)


def test_demo(snap_compare: SnapCompare, seed: Seed) -> None:
    """The demo's "DEMO: local server" label, with linus's conversation opened by alt+2:
    markup shown as typed, ESC shown as a visible symbol."""
    seed.conversation(
        "ada",
        [
            ("ada", "Hi! This is a demo on a local server. Write me something."),
            (USER, "Hello ada!"),
            ("ada", "Nice! Try F6 to cut the network, then send me something."),
        ],
        start=2,
    )
    seed.conversation(
        "grace", [("grace", "Hello from a slow peer: my answers take a few seconds.")], start=0
    )
    seed.conversation(
        "linus",
        [
            ("linus", "I send odd text to show it is displayed safely."),
            (
                "linus",
                "Markup is shown as typed: [bold]not bold[/] and [@click=app.quit]no click[/].",
            ),
            ("linus", "Control characters become visible: \x1b[31m is not red."),
        ],
        start=1,
    )
    app = DemoApp(seed.build(ONLINE), StubDemo(), run_engine=False)

    async def open_linus(pilot: Pilot[int]) -> None:
        await steady(pilot)
        await pilot.press("alt+3")  # ada, grace, linus: in the order of first contact

    assert snap_compare(app, terminal_size=SIZE, run_before=open_linus)


def test_narrow(snap_compare: SnapCompare, seed: Seed) -> None:
    """48 columns: the list has left the screen (ctrl+l brings it), the composer keeps its
    width, and the day separator sits above the first message."""
    two_conversations(seed)
    app = ChatApp(seed.build(ONLINE), run_engine=False)
    assert snap_compare(app, terminal_size=(48, 20), run_before=steady)

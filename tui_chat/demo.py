"""The embedded demo: a local server, peers that answer, and a simulated outage.

``tui-chat`` with no config file runs this, so a newcomer sees the whole life
of a message (◷ → ✓, or ◷ → ✗ → retry → ✓) without setting anything up. The
client reaches the server through a small relay (:mod:`tui_chat.demo_link`); F6 cuts it
(the link looks alive but nothing arrives, the hardest case) and restores it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
from pathlib import Path

import platformdirs

from tui_chat.core.config import (
    AccountSection,
    ClientConfig,
    ServerSection,
    StorageSection,
    SyncSection,
)
from tui_chat.core.engine import Engine
from tui_chat.core.models import ConvKind, Event, MessageAdded, is_group_key
from tui_chat.core.store import LocalStore
from tui_chat.demo_link import DemoLink
from tui_chat.server import db
from tui_chat.server.app import ChatServer

USER = "you"
# name -> (reply delay range in seconds, replies)
PEERS: dict[str, tuple[tuple[float, float], list[str]]] = {
    "ada": (
        (0.5, 1.5),
        [
            "Got it.",
            "Nice! Try F6 to cut the network, then send me something.",
            "Every message you send is stored locally before it leaves.",
            "A ◷ turns into ✓ only when the server has committed it.",
        ],
    ),
    "grace": (
        (4.0, 8.0),
        [
            "Sorry, slow network on my side…",
            "I read everything in order, no gaps, no duplicates.",
            "If a message fails, select it with ↑ and press r to retry or d to give up.",
        ],
    ),
    "linus": (
        (1.0, 3.0),
        [
            "Markup is shown as typed: [bold]not bold[/] and [@click=app.quit]no click[/].",
            "Control characters become visible: \x1b[31m is not red.",
        ],
    ),
}

GROUP_TITLE = "Demo group"
# What the group's members say when you write in the group (one of them answers).
GROUP_REPLIES = [
    "Everyone in the group gets each message once, in the same order.",
    "Names have a colour each. F3 hides or shows the member list.",
    "you: a message that names you is highlighted, and counts as a mention.",
]

DEMO_SYNC = SyncSection(
    freshness_window=20.0,
    ping_interval=2.0,
    ping_timeout=2.0,
    connect_timeout=3.0,
    ack_timeout=4.0,
    backoff_cap=5.0,
)


def _send_quietly(bot: Engine, key: str, body: str) -> None:
    # A peer that left the group (the user may remove it) just stays quiet.
    with contextlib.suppress(ValueError):
        bot.send(key, body)


def demo_dir() -> Path:
    return platformdirs.user_data_path("tui-chat") / "demo"


class Demo:
    """Owns the embedded server, the link and the answering peers."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or demo_dir()
        self.server: ChatServer | None = None
        self.link: DemoLink | None = None
        self.outage = False
        self._bots: list[Engine] = []
        self._tasks: list[asyncio.Task[None]] = []

    def _tokens(self) -> dict[str, str]:
        """Accounts are made once; their tokens live beside the demo database."""
        token_file = self.root / "tokens.json"
        if token_file.exists():
            tokens: dict[str, str] = json.loads(token_file.read_text())
            return tokens
        self.root.mkdir(parents=True, exist_ok=True)
        conn, _ = db.open_db(self.root / "server.db")
        try:
            tokens = {name: db.add_user(conn, name) for name in (USER, *PEERS)}
        finally:
            conn.close()
        token_file.write_text(json.dumps(tokens))
        token_file.chmod(0o600)
        return tokens

    async def start(self) -> Engine:
        """Start the server, the link and the peers; return the user's engine."""
        tokens = self._tokens()
        self.server = ChatServer(self.root / "server.db")
        await self.server.start("127.0.0.1", 0)
        self.link = DemoLink(self.server.port)
        await self.link.start()
        for name in PEERS:
            bot_store = LocalStore(self.root / "peers" / f"{name}.sqlite3", name)
            bot = Engine(
                self._config(name, self.server.url, tokens[name]), tokens[name], store=bot_store
            )
            bot.subscribe(functools.partial(self._answer, bot, name))
            self._bots.append(bot)
            self._tasks.append(asyncio.create_task(bot.run()))
        cfg = self._config(USER, self.link.url, tokens[USER])
        store = LocalStore(self.root / "client" / "you.sqlite3", USER)
        engine = Engine(cfg, tokens[USER], store=store)
        if not engine.conversations():
            self._tasks.append(asyncio.create_task(self._greet()))
        return engine

    def _config(self, user: str, url: str, token: str) -> ClientConfig:
        return ClientConfig(
            account=AccountSection(user=user, token=token),
            server=ServerSection(url=url),
            storage=StorageSection(dir=str(self.root / user)),
            sync=DEMO_SYNC,
        )

    async def _greet(self) -> None:
        await asyncio.sleep(1.0)
        greetings = {
            "ada": "Hi! This is a demo on a local server. Write me something.",
            "grace": "Hello from a slow peer: my answers take a few seconds.",
            "linus": "I send odd text to show it is displayed safely.",
        }
        for bot, (name, text) in zip(self._bots, greetings.items(), strict=True):
            with contextlib.suppress(ValueError):
                bot.send(USER, text)
            del name
        await self._start_group()

    async def _start_group(self) -> None:
        """ada makes a group of everyone and says hello in it, once the server has it."""
        ada = self._bots[0]
        # After the greetings, so that a newcomer's first screen is a conversation with ada.
        await asyncio.sleep(1.5)
        with contextlib.suppress(ValueError):
            ada.create_group(GROUP_TITLE, [USER, *list(PEERS)[1:]])
        for _ in range(200):  # bounded: 20 s, then the demo goes on without the hello
            groups = [
                s.peer
                for s in ada.conversations()
                if s.kind is ConvKind.GROUP and s.conv is not None and s.title == GROUP_TITLE
            ]
            if groups:
                with contextlib.suppress(ValueError):
                    ada.send(groups[0], "Hello all! This is a group: write something here too.")
                return
            await asyncio.sleep(0.1)

    def _answer(self, bot: Engine, name: str, event: Event) -> None:
        if not isinstance(event, MessageAdded) or event.replay:
            return
        msg = event.message
        if msg.own or msg.sender != USER or msg.kind != "text":
            return
        if is_group_key(msg.peer):
            # One member answers in the group (linus, the last one), not all of them.
            if name == list(PEERS)[-1]:
                reply = random.choice(GROUP_REPLIES)
                delay = random.uniform(1.0, 2.5)
                asyncio.get_running_loop().call_later(delay, _send_quietly, bot, msg.peer, reply)
            return
        delay_range, replies = PEERS[name]
        delay = random.uniform(*delay_range)
        reply = random.choice(replies)
        loop = asyncio.get_running_loop()
        loop.call_later(delay, lambda: bot.send(USER, reply))

    def toggle_outage(self) -> bool:
        assert self.link is not None
        self.outage = not self.outage
        if self.outage:
            self.link.cut()
        else:
            self.link.restore()
        return self.outage

    async def stop(self) -> None:
        for bot in self._bots:
            await bot.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for bot in self._bots:
            bot.close()
        if self.link is not None:
            await self.link.stop()
        if self.server is not None:
            await self.server.stop()

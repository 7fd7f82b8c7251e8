"""Text that peers and servers wrote is shown literally and never reaches the terminal raw.

Bodies, user names and server reasons may hold Textual/Rich markup (``[bold]``, ``[/``,
``[@click=app.quit]x[/]``, ``[link=...]``), terminal escape sequences (``ESC [31m``, the
OSC 52 clipboard write ``ESC ]52;c;...BEL``), other C0/C1 controls and bidi overrides.
The promise: the app neither crashes nor runs an action, markup shows as typed, and
control characters show as visible symbols (``␛``, ``<9B>``, ``<U+202E>``).

Three levels: :func:`sanitize.clean` itself, the render functions, and the running app, fed
by a real server (a peer's bodies) and by a hostile server on loopback (user names, notices,
reject reasons and close reasons that a well-behaved server would never send).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console
from rich.style import Style
from textual.command import CommandPalette
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

import tui_chat.ui
from tests.support.ui import (
    FAILED,
    bubble_text,
    flat,
    last_own,
    online,
    open_with,
    own_state,
    peer_sends,
    running_app,
    screen_segments,
    screen_text,
    status_line,
    type_and_send,
    wait_until,
)
from tests.support.wire import RunningServer
from tui_chat import protocol as p
from tui_chat.core.models import (
    ChatMessage,
    ConnectionStatus,
    ConnState,
    ConversationSummary,
    OutState,
)
from tui_chat.ui.composer import normalise_newlines
from tui_chat.ui.render import Hints, Styles, render_message, state_line
from tui_chat.ui.sanitize import clean
from tui_chat.ui.widgets import conversation_prompt, status_text

MARKUP = [
    "[bold]x[/]",
    "[/",
    "[@click=app.quit]x[/]",
    "[link=http://x]y[/]",
    "[/bold]",
    "[on red]z",
    "\\[escaped]",
]
# (as written, as it must appear on screen)
CONTROLS = [
    ("\x1b[31mred\x1b[0m", "␛[31mred␛[0m"),
    ("\x1b]52;c;aGk=\x07", "␛]52;c;aGk=␇"),
    ("a\x00b\x08c\x0dd\x7fe", "a␀b␈c␍d␡e"),
    ("\x9b2J\x85", "<9B>2J<85>"),
    ("\u202eevil\u202c", "<U+202E>evil<U+202C>"),
    ("\u2066iso\u2069", "<U+2066>iso<U+2069>"),
]
EVIL_BODY = " ".join(MARKUP) + " " + " ".join(raw for raw, _ in CONTROLS)
EVIL_BODY_SHOWN = " ".join(MARKUP) + " " + " ".join(shown for _, shown in CONTROLS)
# C0 and C1 controls, DEL, and the bidi controls: none may reach the terminal.
FORBIDDEN = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]} - {"\n"} | set(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
)


def assert_no_raw_controls(texts: list[str]) -> None:
    for text in texts:
        bad = sorted({f"U+{ord(c):04X}" for c in text if c in FORBIDDEN})
        assert not bad, f"raw control characters {bad} in {text!r}"


# ---------------------------------------------------------------- sanitize.clean


@pytest.mark.parametrize(("raw", "shown"), CONTROLS)
def test_clean_makes_controls_visible(raw: str, shown: str) -> None:
    assert clean(raw) == shown


@pytest.mark.parametrize("markup", MARKUP)
def test_clean_leaves_markup_alone(markup: str) -> None:
    # Markup is neutralised by never parsing it, not by rewriting it.
    assert clean(markup) == markup


def test_clean_keeps_ordinary_text() -> None:
    text = "héllo wörld 你好 🙂 — ‘quotes’ e\u0301 \u00a0nbsp"
    assert clean(text) == text
    assert clean("") == ""


def test_clean_newlines_and_tabs() -> None:
    assert clean("a\nb") == "a\nb"
    assert clean("a\nb", single_line=True) == "a␤b"
    assert clean("a\tb") == "a    b"
    assert clean("a\r\nb", single_line=True) == "a␍␤b"


def test_clean_every_control_character() -> None:
    for code in range(0x20):
        if code in (0x09, 0x0A):
            continue
        assert clean(chr(code)) == chr(0x2400 + code), hex(code)
    assert clean("\x7f") == "␡"
    for code in range(0x80, 0xA0):
        assert clean(chr(code)) == f"<{code:02X}>", hex(code)
    for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c":
        assert clean(ch) == f"<U+{ord(ch):04X}>"


def test_clean_output_never_holds_a_control_character() -> None:
    every = "".join(chr(c) for c in range(0x3000)) + "\u202e\u2066\u2069"
    for single_line in (False, True):
        out = clean(every, single_line=single_line)
        assert_no_raw_controls([out])
        assert ("\n" in out) is not single_line


# ---------------------------------------------------------------- render functions


def _styles() -> Styles:
    plain = Style()
    return Styles(plain, plain, plain, plain, plain, plain, plain, plain)


def _message(**kw: object) -> ChatMessage:
    fields: dict[str, object] = {
        "peer": "bob",
        "sender": "bob",
        "client_id": "c1",
        "body": EVIL_BODY,
        "ts": int(time.time() * 1000),
        "own": False,
        "seq": 1,
    }
    fields.update(kw)
    return ChatMessage(**fields)  # type: ignore[arg-type]


def test_render_message_shows_peer_text_literally() -> None:
    console = Console(width=400, force_terminal=True, color_system="truecolor")
    for msg in (
        _message(sender=EVIL_BODY, peer="evil"),
        _message(own=True, sender="alice", state=OutState.FAILED, error=EVIL_BODY, seq=None),
        _message(own=True, sender="alice", state=OutState.PENDING, error=EVIL_BODY, seq=None),
    ):
        strips = render_message(msg, 400, console, _styles(), Hints())
        text = flat("\n".join(s.text for s in strips))
        assert EVIL_BODY_SHOWN in text
        assert_no_raw_controls([seg.text for s in strips for seg in s])
        # Rendered to a real terminal stream, the only escapes are Rich's own SGR codes.
        with console.capture() as cap:
            for s in strips:
                console.print(s, end="")
        assert "\x1b]" not in cap.get()
        assert "[31m" not in cap.get().replace("␛[31m", "")


def test_state_line_and_prompt_and_status_show_reasons_literally() -> None:
    failed = _message(own=True, sender="alice", state=OutState.FAILED, error=EVIL_BODY, seq=None)
    line = state_line(failed, Hints())
    assert line is not None and EVIL_BODY_SHOWN in line
    assert_no_raw_controls([line])

    summary = ConversationSummary(
        peer=EVIL_BODY, conv="c", unread=2, last=_message(body="a\nb" + EVIL_BODY), failed=1,
        pending=0,
    )  # fmt: skip
    prompt = conversation_prompt(summary, width=400)
    assert EVIL_BODY_SHOWN in prompt.plain
    assert "a␤b" in prompt.plain
    assert prompt.plain.count("\n") == 1  # name line and preview line, whatever the body held
    assert_no_raw_controls([prompt.plain.replace("\n", "")])

    now = time.time()
    for state in ConnState:
        status = ConnectionStatus(state, 2, retry_in=3.0, reason=EVIL_BODY + "\n2nd", since=now)
        text = status_text(status, 1, 1).plain
        assert_no_raw_controls([text])
        if state is not ConnState.STOPPED and state is not ConnState.ONLINE:
            assert EVIL_BODY_SHOWN + "␤2nd" in text, (state, text)


# ---------------------------------------------------------------- guard on the source


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _markup_false(call: ast.Call) -> bool:
    return any(
        k.arg == "markup" and isinstance(k.value, ast.Constant) and k.value.value is False
        for k in call.keywords
    )


def test_ui_source_never_lets_markup_through() -> None:
    """Every notify() passes markup=False; Static/Label/OptionList get markup=False or a literal;
    no markup is parsed from a non-literal (``Content.from_markup``).

    (Command palette titles are always parsed by Textual; the hostile-server test below
    checks that a peer's name never gets there unvetted.)

    A guard on the source: a new toast or label that forgets it fails here, before a peer's
    text can ever reach it.
    """
    ui_dir = Path(tui_chat.ui.__file__).parent
    offenders: list[str] = []
    notify_calls = 0
    for path in sorted(ui_dir.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for call in _calls(tree):
            where = f"{path.name}:{call.lineno}"
            name = _name(call)
            if name == "notify":
                notify_calls += 1
                if not _markup_false(call):
                    offenders.append(f"{where}: notify() without markup=False")
            elif name in ("Static", "Label", "OptionList", "Option") and call.args:
                first = call.args[0]
                literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
                if not literal and not _markup_false(call) and name != "Option":
                    offenders.append(f"{where}: {name}() of a non-literal without markup=False")
                if name == "Option" and isinstance(first, ast.JoinedStr | ast.Name):
                    offenders.append(f"{where}: Option() with a str prompt (markup is parsed)")
            elif name in ("from_markup", "render_markup") and call.args:
                # The conversation list renders Content itself: only from Text, never markup.
                first = call.args[0]
                if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                    offenders.append(f"{where}: {name}() of a non-literal")
    assert notify_calls >= 10, "the guard found too few notify() calls: is it still looking?"
    assert not offenders, "\n".join(offenders)


# ---------------------------------------------------------------- the app, real server


async def test_peer_bodies_are_shown_literally(chat_server: RunningServer, tmp_path: Path) -> None:
    bodies = [*MARKUP, *(raw for raw, _ in CONTROLS), "two\nlines " + EVIL_BODY]
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await online(app, pilot)
        await peer_sends(chat_server, "bob", "alice", *bodies)
        await wait_until(pilot, lambda: len(app.view.items) == len(bodies), "all bodies shown")
        await pilot.pause()
        assert app.is_running
        view = flat("\n".join(bubble_text(app, m.client_id) for m in app.view.items))
        for markup in MARKUP:
            assert markup in view
        for _, shown in CONTROLS:
            assert shown in view
        assert EVIL_BODY_SHOWN in view
        screen = screen_text(app)
        assert "[@click=app.quit]x[/]" in screen
        assert "[link=http://x]y[/]" in screen
        assert "two␤lines" in screen  # the preview in the list is one line
        assert_no_raw_controls(screen_segments(app))
        assert "\x1b" not in app.export_screenshot()

        # Clicking where a parsed [@click=app.quit] would have made a link does nothing.
        trap = "[@click=app.quit]x[/]"
        rows = [(y, line) for y, line in enumerate(screen.splitlines()) if trap in line]
        assert rows
        for y, line in rows:
            await pilot.click(offset=(line.index(trap) + len("[@click=app.quit]"), y))
        await pilot.pause(0.2)
        assert app.is_running


async def test_own_text_with_markup_and_controls(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "a") as (
        app,
        pilot,
    ):
        await online(app, pilot)
        await open_with(app, pilot, "bob")
        app.composer.value = EVIL_BODY  # as if pasted
        await pilot.press("enter")
        msg = last_own(app)
        # Stored and sent as written, except that the composer holds lines: CR and NEL
        # are line ends there (as in a paste), the other controls are kept.
        assert msg.body == normalise_newlines(EVIL_BODY)
        assert msg.body.count("\n") == 2
        await wait_until(pilot, lambda: own_state(app, msg.client_id) is OutState.SENT, "sent")
        shown = flat(EVIL_BODY_SHOWN.replace("␍", "\n").replace("<85>", "\n"))
        assert shown in flat(bubble_text(app, msg.client_id))
        await pilot.pause()
        assert_no_raw_controls(screen_segments(app))
        assert app.is_running


# ---------------------------------------------------------------- the app, hostile server

EVIL_NAME = "[@click=app.quit]q[/] [/ \x1b[2J\u202e"
EVIL_NAME_SHOWN = "[@click=app.quit]q[/] [/ ␛[2J<U+202E>"
EVIL_NOTICE = "[bold]notice[/] [/ \x1b]52;c;aGk=\x07"
EVIL_NOTICE_SHOWN = "[bold]notice[/] [/ ␛]52;c;aGk=␇"
EVIL_REJECT = "[link=http://x]no[/] \x1b[31m\x9b"
EVIL_REJECT_SHOWN = "[link=http://x]no[/] ␛[31m<9B>"
EVIL_CLOSE = "[@click=app.quit]x[/] [/ \x1b[5m"
EVIL_CLOSE_SHOWN = "[@click=app.quit]x[/] [/ ␛[5m"


class HostileServer:
    """A websocket server that speaks the protocol but fills every text field with traps.

    First login: welcome, one message from a user named :data:`EVIL_NAME`, synced, and an
    error notice; every ``send`` is rejected with :data:`EVIL_REJECT`; :meth:`kick` closes
    with the auth-failed code and :data:`EVIL_CLOSE`. Later logins (``error_first``): an
    error frame before the welcome.
    """

    def __init__(self) -> None:
        self.logins = 0
        self.error_first = False
        self._kick = asyncio.Event()
        self.url = ""

    def kick(self) -> None:
        self._kick.set()

    async def handler(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.recv()  # hello
            self.logins += 1
            if self.error_first:
                await self._send(ws, p.Error(code="bad", reason=EVIL_NOTICE), self._welcome())
                await ws.close(1011, "bye")
                return
            message = p.Message(
                conv="c-evil", seq=1, sender=EVIL_NAME, to="alice", client_id="evil-1",
                body=EVIL_BODY, ts=int(time.time() * 1000),
            )  # fmt: skip
            await self._send(
                ws,
                self._welcome(),
                message,
                p.Synced(cursors={"c-evil": 1}),
                p.Error(code="evil", reason=EVIL_NOTICE),
            )
            await self._answer(ws)

    async def _answer(self, ws: ServerConnection) -> None:
        """Reject every send until :meth:`kick`, then close as if the token were bad."""
        kicked = asyncio.ensure_future(self._kick.wait())
        try:
            while True:
                recv = asyncio.ensure_future(ws.recv())
                done, _ = await asyncio.wait({recv, kicked}, return_when=asyncio.FIRST_COMPLETED)
                if kicked in done:
                    recv.cancel()
                    await ws.close(p.CloseCode.AUTH_FAILED, EVIL_CLOSE)
                    return
                frame = p.client_decoder.decode(recv.result())
                if isinstance(frame, p.Send):
                    reject = p.Reject(
                        client_id=frame.client_id, code="evil", reason=EVIL_REJECT, retryable=False
                    )
                    await self._send(ws, reject)
        finally:
            kicked.cancel()

    @staticmethod
    async def _send(ws: ServerConnection, *frames: p._Frame) -> None:
        for frame in frames:
            await ws.send(p.encode(frame).decode())

    @staticmethod
    def _welcome() -> p.Welcome:
        return p.Welcome(
            v=p.PROTOCOL_VERSION, user="alice", epoch="hostile", server_time=int(time.time() * 1e3)
        )


@contextlib.asynccontextmanager
async def hostile_server() -> AsyncIterator[HostileServer]:
    hostile = HostileServer()
    async with serve(hostile.handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        hostile.url = f"ws://127.0.0.1:{port}"
        yield hostile


async def test_hostile_server_names_notices_and_reasons(tmp_path: Path) -> None:
    async with (
        hostile_server() as hostile,
        running_app(hostile.url, "any-token", tmp_path / "a") as (app, pilot),
    ):
        await online(app, pilot)
        await wait_until(pilot, lambda: app.peer == EVIL_NAME, "the hostile peer's conversation")
        await wait_until(pilot, lambda: EVIL_NOTICE_SHOWN in screen_text(app), "notice toast")
        screen = screen_text(app)
        assert f"Conversation with {EVIL_NAME_SHOWN}" in screen
        assert EVIL_NAME_SHOWN in bubble_text(app, "evil-1")
        assert EVIL_BODY_SHOWN in flat(bubble_text(app, "evil-1"))
        assert_no_raw_controls(screen_segments(app))
        assert app.is_running

        # Writing to a user name no real server allows: refused, the text stays.
        await pilot.press(*"reply")
        await pilot.press("enter")
        assert app.composer.value == "reply"
        await wait_until(pilot, lambda: "invalid user name" in screen_text(app), "error toast")
        assert app.is_running
        assert_no_raw_controls(screen_segments(app))

        # The command palette lists the conversation by name; matching must not parse it.
        await pilot.press("ctrl+k")
        await wait_until(pilot, lambda: CommandPalette.is_open(app), "the command palette")
        await pilot.press(*"switch")
        await pilot.pause(0.5)
        assert app.is_running
        assert_no_raw_controls(screen_segments(app))
        await pilot.press("escape")
        await wait_until(pilot, lambda: not CommandPalette.is_open(app), "palette closed")
        assert app.is_running

        # A reject reason from the server lands in the failure hint and the toast.
        await pilot.press(*["backspace"] * 5)
        await open_with(app, pilot, "bob")
        await type_and_send(pilot, "hi bob")
        cid = last_own(app).client_id
        await wait_until(pilot, lambda: own_state(app, cid) is FAILED, "rejected")
        assert EVIL_REJECT_SHOWN in flat(bubble_text(app, cid))
        await wait_until(pilot, lambda: "Message failed" in screen_text(app), "failure toast")
        assert EVIL_REJECT_SHOWN in flat(screen_text(app))

        # A close reason: the token is "rejected" with a reason full of traps.
        hostile.kick()
        await wait_until(pilot, lambda: "token rejected" in status_line(app), "token rejected")
        assert EVIL_CLOSE_SHOWN in status_line(app)
        await wait_until(
            pilot, lambda: "rejected the token" in screen_text(app), "auth failure toast"
        )
        assert_no_raw_controls(screen_segments(app))

        # An error frame instead of a welcome: the reason is shown in the status line.
        hostile.error_first = True
        await pilot.press("f5")
        await wait_until(pilot, lambda: hostile.logins >= 2, "a new login after F5")
        await wait_until(
            pilot,
            lambda: f"server error: {EVIL_NOTICE_SHOWN}" in status_line(app),
            "the server's error as the reason in the status line",
        )
        assert_no_raw_controls(screen_segments(app))
        assert "\x1b" not in app.export_screenshot()
        assert app.is_running

"""The conversation list on its own: a line-rendered list of two-line entries.

The list is hosted in the app's own layout (sidebar of the real stylesheet), fed
summaries directly, and read off the screen: what a user sees and what the keys and the
mouse do, including with 1,000 entries of which only the visible ones are rendered.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label

import tui_chat.ui
from tui_chat.core.models import ChatMessage, ConversationSummary, ConvKind
from tui_chat.ui.widgets import ENTRY_HEIGHT, ConversationList

SIZE = (80, 24)


def summary(peer: str, body: str | None = None, **kw: object) -> ConversationSummary:
    last = None
    if body is not None:
        last = ChatMessage(peer, sender=peer, client_id="1", body=body, ts=0, own=False)
    fields: dict[str, object] = {
        "conv": f"c-{peer}", "unread": 0, "last": last, "failed": 0, "pending": 0, **kw
    }  # fmt: skip
    return ConversationSummary(peer, **fields)  # type: ignore[arg-type]


class Host(App[None]):
    CSS_PATH = Path(tui_chat.ui.__file__).parent / "app.tcss"

    def __init__(self, summaries: list[ConversationSummary]) -> None:
        super().__init__()
        self.initial = summaries
        self.opened: list[str] = []

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="sidebar"):
                yield Label("Conversations", id="sidebar-title")
                yield ConversationList(id="conversations", me="me")
            yield Label("elsewhere", id="chat")

    def on_mount(self) -> None:
        self.query_one(ConversationList).show(self.initial, None)

    def on_conversation_list_opened(self, event: ConversationList.Opened) -> None:
        self.opened.append(event.peer)


def sidebar_rows(app: Host) -> list[str]:
    """The text of the list's rows on screen (its columns only, right-stripped)."""
    lst = app.query_one(ConversationList)
    region = lst.content_region
    strips = app.screen._compositor.render_strips()
    return [
        strips[y].crop(region.x, region.right).text.rstrip() for y in range(region.y, region.bottom)
    ]


def peers(n: int) -> list[ConversationSummary]:
    return [summary(f"p{i:04d}", f"hello from p{i:04d}") for i in range(n)]


async def test_entries_are_two_lines_numbered_in_the_engines_order_with_marks() -> None:
    long_title = "A very long group title that cannot fit in the sidebar at all"
    summaries = [
        summary("zed", "last words", unread=3),
        summary("amy", None, mentions=2),
        summary("#g1", "hi all", kind=ConvKind.GROUP, title=long_title, members=("me", "amy")),
        summary("#g2", None, kind=ConvKind.GROUP, title="Old", joined=False),
        summary("+pending1", None, kind=ConvKind.GROUP, title="New one"),
        *peers(10),
    ]
    app = Host(summaries)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        lst = app.query_one(ConversationList)
        assert lst.order == [s.peer for s in summaries]  # never sorted
        assert lst.virtual_size.height == ENTRY_HEIGHT * len(summaries)
        rows = sidebar_rows(app)
        assert rows[0] == "1 zed  3", rows  # the unread count (reversed, on screen)
        assert rows[1] == "  last words"
        assert rows[2] == "2 amy @2"
        assert rows[3].strip() == "(no messages yet)"
        # A title too long for the line is cut with "…": the entry stays two lines.
        assert rows[4].startswith("3 # “A very long") and rows[4].endswith("…"), rows[4]
        assert rows[5] == "  #g1: hi all"  # a group's preview names the sender
        assert rows[6].startswith("4 # “Old”") and "(left)" in rows[6]
        assert "◷ creating…" in rows[8]
        # Places 10 and on have no number (alt+1 … alt+9 reach the first nine).
        assert rows[16].startswith("9 p0003")
        assert rows[18].startswith("  p0004"), rows[18]


async def test_keys_move_the_cursor_and_open_the_highlighted_entry() -> None:
    app = Host(peers(30))
    async with app.run_test(size=SIZE) as pilot:
        lst = app.query_one(ConversationList)
        lst.focus()
        await pilot.pause()
        assert lst.highlighted is None
        await pilot.press("down")
        assert lst.highlighted == 0
        await pilot.press("up")  # wraps to the last
        assert lst.highlighted == 29
        await pilot.pause()
        # The highlighted entry is scrolled into view (both of its lines).
        top = int(lst.scroll_y)
        assert top <= ENTRY_HEIGHT * 29 and top + lst.size.height >= ENTRY_HEIGHT * 30
        assert sidebar_rows(app)[-2].startswith("  p0029")
        await pilot.press("down")  # wraps to the first
        assert lst.highlighted == 0
        await pilot.press("end")
        assert lst.highlighted == 29
        await pilot.press("home")
        assert lst.highlighted == 0
        page = lst.scrollable_content_region.height // ENTRY_HEIGHT
        await pilot.press("pagedown")
        assert lst.highlighted == page
        await pilot.press("pageup")
        assert lst.highlighted == 0
        await pilot.press("pageup")  # stops at the first
        assert lst.highlighted == 0
        for _ in range(5):
            await pilot.press("pagedown")
        assert lst.highlighted == 29  # and at the last
        await pilot.press("home", "down", "enter")
        await pilot.press("down", "right")
        await pilot.press("down", "tab")
        await pilot.pause()
        assert app.opened == ["p0001", "p0002", "p0003"]


async def test_a_click_on_either_line_of_an_entry_opens_it() -> None:
    app = Host(peers(5))
    async with app.run_test(size=SIZE) as pilot:
        lst = app.query_one(ConversationList)
        await pilot.pause()
        region = lst.content_region
        # The preview line of the third entry, then the title line of the second.
        await pilot.click(offset=(region.x + 3, region.y + 5))
        await pilot.click(offset=(region.x + 3, region.y + 2))
        # Below the last entry: nothing.
        await pilot.click(offset=(region.x + 3, region.y + 12))
        await pilot.pause()
        assert app.opened == ["p0002", "p0001"]
        assert lst.highlighted == 1


async def test_an_update_repaints_the_entry_and_forget_removes_it() -> None:
    app = Host(peers(3))
    async with app.run_test(size=SIZE) as pilot:
        lst = app.query_one(ConversationList)
        lst.show(lst_summaries(lst), "p0002")
        await pilot.pause()
        assert lst.highlighted == 2
        assert not lst.update_summary(summary("p0001", "something new", unread=1))
        await pilot.pause()
        rows = sidebar_rows(app)
        assert rows[2] == "2 p0001  1"
        assert rows[3].strip() == "something new"
        # A new peer goes last until the engine's order is shown again.
        assert lst.update_summary(summary("newbie", "first"))
        await pilot.pause()
        assert lst.order[-1] == "newbie" and sidebar_rows(app)[6].startswith("4 newbie")
        lst.forget("p0000")
        await pilot.pause()
        assert lst.order == ["p0001", "p0002", "newbie"]
        assert lst.virtual_size.height == ENTRY_HEIGHT * 3
        assert sidebar_rows(app)[0].startswith("1 p0001")  # renumbered
        lst.forget("newbie")
        lst.forget("p0002")
        assert lst.highlighted == 0  # clamped to what is left
        lst.forget("p0001")
        assert lst.highlighted is None


def lst_summaries(lst: ConversationList) -> list[ConversationSummary]:
    return [lst.summaries[p] for p in lst.order]


async def test_a_thousand_entries_render_only_what_is_on_screen() -> None:
    app = Host(peers(1000))
    async with app.run_test(size=SIZE) as pilot:
        lst = app.query_one(ConversationList)
        lst.show(lst_summaries(lst), "p0500")
        await pilot.pause()
        assert lst.virtual_size.height == ENTRY_HEIGHT * 1000
        visible = lst.scrollable_content_region.height // ENTRY_HEIGHT + 1
        # Two screens were painted: the top one at mount, then the one around p0500.
        assert len(lst._rendered) <= 2 * visible, len(lst._rendered)
        rows = sidebar_rows(app)
        assert any(r.startswith("  p0500") for r in rows), rows
        await pilot.press("end")
        lst.focus()
        await pilot.press("end")
        await pilot.pause()
        assert sidebar_rows(app)[-2].startswith("  p0999")

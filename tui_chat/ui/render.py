"""Turn one message into the terminal lines the message view paints.

Everything a peer or server wrote goes through :func:`sanitize.clean` and into
``rich.text.Text`` objects built from plain strings: it is never parsed as
markup, so ``[bold]`` or ``[@click=app.quit]`` shows as typed.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip

from tui_chat.core.models import ChatMessage, OutState, is_group_key
from tui_chat.protocol import MessageKind
from tui_chat.ui import dates
from tui_chat.ui.groups_text import event_line, name_colour
from tui_chat.ui.links import find_urls
from tui_chat.ui.sanitize import clean

MARKS = {
    OutState.PENDING: "◷",
    OutState.SENT: "✓",
    OutState.FAILED: "✗",
    OutState.CANCELLING: "⊘",
    OutState.GIVEN_UP: "⌫",
}


@dataclass(frozen=True)
class Styles:
    base: Style
    meta: Style
    own: Style
    peer: Style
    pending: Style
    failed: Style
    hint: Style
    selected: Style


@dataclass(frozen=True)
class Hints:
    """Key names shown in the failure hint; they follow the user's key map."""

    retry: str = "r"
    give_up: str = "d"
    edit: str = "e"
    undo: str = "u"


def _time(msg: ChatMessage, selected: bool) -> str:
    """HH:MM of when it was written; the full date (and the server's time) when selected."""
    return dates.selected_time(msg) if selected else dates.clock(dates.shown_ts(msg))


def day_separator(label: str, width: int, console: Console, styles: Styles) -> Strip:
    """``──── Today ────``: the line above the first message of a day."""
    words = f" {label} "
    side = max(2, (width - len(words)) // 2)
    text = Text("─" * side + words + "─" * side, style=styles.meta)
    text.truncate(width)
    return _to_strips([text], width, console, styles)[0]


def state_line(msg: ChatMessage, hints: Hints) -> str | None:
    """The words under an own message that is not simply sent."""
    if msg.state is OutState.FAILED:
        reason = clean(msg.error or "not delivered", single_line=True)
        if not reason.startswith("not "):
            reason = f"not delivered: {reason}"
        # A reject the server will repeat (too long, cancelled, unknown user) is never
        # offered for retry: only edit or give up can help.
        retry = f" · {hints.retry} retry" if msg.retryable else ""
        # A group command (add, rename …) has no text to edit: give it up and do it again.
        edit = f" · {hints.edit} edit" if msg.kind == MessageKind.TEXT else ""
        return f"✗ {reason}{retry} · {hints.give_up} give up{edit}"
    if msg.state is OutState.CANCELLING:
        # Not "will not be sent": it may have reached the server, which has the last word.
        return (
            "⊘ cancelling… it may already have reached the server; waiting for the server"
            f" to confirm it will not be delivered · {hints.undo} undo"
        )
    if msg.held:
        return "… held: waits behind a failed message"
    if msg.state is OutState.PENDING:
        return "◷ maybe sent" + (f" (retrying: {clean(msg.error)})" if msg.error else "")
    return None


def _to_strips(lines: list[Text], width: int, console: Console, styles: Styles) -> list[Strip]:
    strips: list[Strip] = []
    for line in lines:
        line.truncate(width)
        own_style = console.get_style(line.style, default=Style.null())
        segments = list(Segment.apply_style(line.render(console), styles.base + own_style))
        strips.append(Strip(segments).extend_cell_length(width, styles.base))
    return strips


def render_event(
    msg: ChatMessage,
    width: int,
    console: Console,
    styles: Styles,
    hints: Hints,
    *,
    me: str,
    selected: bool = False,
) -> list[Strip]:
    """A group event as one quiet line ("carol was removed by alice"), centred; an own
    command not yet confirmed carries its mark and, failed, the hint line."""
    style = styles.meta + Style(italic=True)
    if selected:
        style = style + styles.selected
    mark = MARKS.get(msg.state, "") if msg.own and msg.state not in (None, OutState.SENT) else ""
    words = event_line(msg, me)
    text = Text(f"{mark} {words}" if mark else words, style=style)
    text.append(f" · {_time(msg, selected)}", style=style)
    lines = text.wrap(console, max(8, width - 4), justify="center", overflow="fold")
    out = list(lines)
    extra = state_line(msg, hints) if msg.own and msg.state is not OutState.SENT else None
    if extra:
        hint_style = styles.hint if msg.state is not OutState.FAILED else styles.failed
        out.extend(Text(extra, style=hint_style).wrap(console, max(8, width - 4), justify="center"))
    strips = _to_strips(out, width, console, styles)
    strips.append(Strip.blank(width, styles.base))
    return strips


def render_message(
    msg: ChatMessage,
    width: int,
    console: Console,
    styles: Styles,
    hints: Hints,
    *,
    selected: bool = False,
    me: str = "",
    seen: bool = False,
    read_by: str | None = None,
) -> list[Strip]:
    """The lines of one message (ending with a blank separator line). ``seen``: an own
    direct message the peer has read (✓✓); ``read_by``: who has read it, in a group."""
    if msg.kind != MessageKind.TEXT:
        return render_event(msg, width, console, styles, hints, me=me, selected=selected)
    width = max(width, 10)
    bubble = max(8, min(width - 2, int(width * 0.75)))
    body_style = styles.own if msg.own else styles.peer
    # Only the colour: the component styles also carry the view's background,
    # which would erase the bubble's. A failed body keeps its normal colour (red
    # on the bubble is hard to read); the ✗ mark and the hint line say it failed.
    if msg.state in (OutState.PENDING, OutState.CANCELLING):
        body_style = body_style + Style(color=styles.pending.color)
    if msg.mentions_me and not msg.own:
        body_style = body_style + Style(bold=True)
    if selected:
        body_style = body_style + styles.selected

    if msg.own:
        mark = MARKS.get(msg.state, "") if msg.state else ""
        if seen and msg.state is OutState.SENT:
            mark = "✓✓"  # the server's receipt: the peer has read up to here
        header = Text(f"{_time(msg, selected)} you {mark}", style=styles.meta)
        if read_by:
            header.append(f" · {read_by}", style=styles.meta)
    else:
        name_style = styles.meta + Style(bold=True)
        if is_group_key(msg.peer):
            # In a group each sender has a colour of their own, the same everywhere.
            name_style = name_style + Style(color=name_colour(msg.sender))
        header = Text(clean(msg.sender, single_line=True), style=name_style)
        header.append(f" · {_time(msg, selected)}", style=styles.meta)
        if msg.mentions_me:
            header.append(" · mentions you", style=styles.hint + Style(bold=True))
        if read_by:
            header.append(f" · {read_by}", style=styles.meta)
    lines: list[Text] = [header]

    body = Text(clean(msg.body), style=body_style)
    for start, end, url in find_urls(body.plain):
        # Underlined, and a terminal hyperlink (OSC 8) where the terminal makes them.
        body.stylize(Style(underline=True, link=url), start, end)
    for line in body.wrap(console, bubble - 2, overflow="fold"):
        line.pad_left(1)
        line.pad_right(bubble - 1 - line.cell_len)
        line.stylize(body_style)
        lines.append(line)
    extra = state_line(msg, hints) if msg.own else None
    first_hint = len(lines)
    if extra:
        hint = Text(extra, style=styles.hint if msg.state is not OutState.FAILED else styles.failed)
        lines.extend(hint.wrap(console, bubble - 1, overflow="fold"))

    strips: list[Strip] = []
    for i, line in enumerate(lines):
        line.truncate(width)
        if not msg.own:
            pad = 0
        elif i == 0:
            pad = width - line.cell_len  # the header sits at the right edge
        else:
            # Body and hint lines start at the bubble's left edge, so a wrapped
            # hint reads as one block rather than ragged right-aligned pieces.
            pad = width - bubble + (1 if i >= first_hint else 0)
        segments = [Segment(" " * pad, styles.base)] if pad > 0 else []
        # Text.render drops the Text's own style when it has no spans (Rich
        # applies it only through the console), so apply it here.
        own_style = console.get_style(line.style, default=Style.null())
        segments.extend(Segment.apply_style(line.render(console), styles.base + own_style))
        strips.append(Strip(segments).extend_cell_length(width, styles.base))
    strips.append(Strip.blank(width, styles.base))
    return strips

"""Groups in the TUI, with the real engine and server: create, talk, manage, leave.

Each step is typed as a user would (ctrl+g, F3, F4, F7, F2, F8) and read off the screen;
the other members are raw websocket clients speaking only the protocol.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.ui import (
    SENT,
    flat,
    online,
    own_state,
    running_app,
    screen_text,
    type_and_send,
    wait_until,
)
from tests.support.wire import RunningServer, assert_silent, command, login, recv_until
from tui_chat import protocol as p
from tui_chat.core.models import ConvKind
from tui_chat.ui.groups_text import NAME_PALETTE, name_colour
from tui_chat.ui.widgets import conversation_prompt


def group_key(app: object) -> str:
    peer = getattr(app, "peer")  # noqa: B009
    assert isinstance(peer, str)
    return peer


async def test_create_talk_remove_rename_and_leave_from_the_keyboard(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    bob, *_ = await login(chat_server.url, "bob", chat_server.tokens["bob"])
    carol, *_ = await login(chat_server.url, "carol", chat_server.tokens["carol"])
    try:
        async with running_app(
            chat_server.url, chat_server.tokens["alice"], tmp_path / "alice"
        ) as (app, pilot):
            await online(app, pilot)
            # ctrl+g: one line, the title, a colon, the members.
            await pilot.press("ctrl+g")
            await wait_until(
                pilot, lambda: type(app.screen).__name__ == "CreateGroupScreen", "dialog"
            )
            await pilot.press(*"Trip: bob, carol", "enter")
            # Confirmed by the server: the pending "+…" key became "#conv".
            await wait_until(pilot, lambda: (app.peer or "").startswith("#"), "the group open")
            key = group_key(app)
            conv = key[1:]
            await wait_until(
                pilot, lambda: "you created the group “Trip”" in screen_text(app), "created line"
            )
            await wait_until(
                pilot, lambda: "Group “Trip” · 3 members" in screen_text(app), "title bar"
            )
            screen = screen_text(app)
            assert "# “Trip”" in screen  # the list shows the title, marked as a group
            # The member panel (shown by default; F3 toggles it).
            assert "bob" in screen and "carol" in screen and "(creator)" in screen
            await pilot.press("f3")
            await wait_until(pilot, lambda: "(creator)" not in screen_text(app), "panel hidden")
            await pilot.press("f3")
            await wait_until(pilot, lambda: "(creator)" in screen_text(app), "panel shown")

            # A text to the group reaches both members; theirs reaches us with their name.
            await type_and_send(pilot, "hello group")
            sent = next(m for m in app.view.items if m.body == "hello group")
            await wait_until(pilot, lambda: own_state(app, sent.client_id) is SENT, "✓")
            for ws in (bob, carol):
                msg, _ = await recv_until(ws, p.Message)
                while msg.body != "hello group":
                    msg, _ = await recv_until(ws, p.Message)
            ack = await command(bob, p.Send(client_id="b1", conv=conv, body="hi alice, all set"))
            assert isinstance(ack, p.Ack)
            await wait_until(pilot, lambda: "hi alice, all set" in screen_text(app), "bob's text")
            bob_msg = next(m for m in app.view.items if m.client_id == "b1")
            assert bob_msg.sender == "bob" and bob_msg.mentions_me
            assert "mentions you" in screen_text(app)

            # F7 removes carol: a quiet line, and carol receives nothing after it.
            await pilot.press("f7")
            await wait_until(pilot, lambda: type(app.screen).__name__ == "AskLineScreen", "ask")
            await pilot.press(*"carol", "enter")
            await wait_until(
                pilot, lambda: "carol was removed by you" in screen_text(app), "removed line"
            )
            await wait_until(pilot, lambda: "· 2 members" in screen_text(app), "2 members")

            # F2 renames; F8 leaves after a "yes".
            await pilot.press("f2")
            await wait_until(pilot, lambda: type(app.screen).__name__ == "AskLineScreen", "ask")
            # The old title is there to edit: add to it.
            await pilot.press("end", *" 2026", "enter")
            await wait_until(
                pilot,
                lambda: "you renamed the group to “Trip 2026”" in flat(screen_text(app)),
                "renamed line",
            )
            await pilot.press("f8")
            await wait_until(pilot, lambda: type(app.screen).__name__ == "AskLineScreen", "ask")
            await pilot.press(*"yes", "enter")
            await wait_until(pilot, lambda: "you left" in screen_text(app), "left line")
            await wait_until(
                pilot, lambda: "you are no longer a member" in screen_text(app), "title says so"
            )
            # Typing into a group one left sends nothing and keeps the text.
            await type_and_send(pilot, "still there?")
            await wait_until(
                pilot,
                lambda: "no longer a member of this group: nothing can be" in screen_text(app),
                "the refusal",
            )
            assert app.composer.value == "still there?"
            summary = app.engine.conversation(key)
            assert (summary.kind, summary.joined) == (ConvKind.GROUP, False)
        # carol's stream ended at her removal: the rename and the leave never reached her.
        kinds = []
        while p.MessageKind.REMOVED not in kinds:
            msg, _ = await recv_until(carol, p.Message)
            kinds.append(msg.kind)
        await assert_silent(carol)
    finally:
        await bob.close()
        await carol.close()


def test_sender_colours_are_stable_and_from_the_palette() -> None:
    assert name_colour("bob") == name_colour("bob")
    assert all(name_colour(n) in NAME_PALETTE for n in ("a", "bob", "carol", "x" * 32))
    assert len({name_colour(n) for n in ("alice", "bob", "carol", "dave", "erin", "frank")}) > 2


def test_a_hostile_title_is_shown_as_typed_in_the_list() -> None:
    from tui_chat.core.models import ConversationSummary

    s = ConversationSummary(
        peer="#g1", conv="g1", unread=2, last=None, failed=0, pending=0,
        kind=ConvKind.GROUP, title="[bold]x[/]\x1b[2J", members=("a",), mentions=1,
    )  # fmt: skip
    text = conversation_prompt(s, 1)
    assert "[bold]x[/]" in text.plain and "\x1b" not in text.plain
    assert "@1" in text.plain
    # Nothing of the title became a style: the only styled runs are our own marks.
    assert all(text.plain[span.start : span.end] != "x" for span in text.spans)


def test_a_failed_group_command_offers_no_edit_and_says_what_it_was() -> None:
    from tui_chat.core.models import ChatMessage, OutState
    from tui_chat.ui.groups_text import event_line
    from tui_chat.ui.render import Hints, state_line

    failed = ChatMessage(
        peer="#g1", sender="alice", client_id="c1", body="", ts=0, own=True,
        state=OutState.FAILED, error="you are no longer a member of this group",
        retryable=False, kind=p.MessageKind.ADDED, user="dave",
    )  # fmt: skip
    line = state_line(failed, Hints())
    assert line is not None
    assert "you are no longer a member" in line and "give up" in line
    assert "edit" not in line and "retry" not in line
    assert event_line(failed, "alice") == "you added dave"
    text = ChatMessage(
        peer="#g1", sender="alice", client_id="c2", body="hi", ts=0, own=True,
        state=OutState.FAILED, error="x",
    )  # fmt: skip
    assert "e edit" in (state_line(text, Hints()) or "")


def test_the_create_line_is_parsed_or_refused_with_the_reason() -> None:
    from tui_chat.ui.group_screens import parse_group

    assert parse_group("Lunch: bob, carol") == ("Lunch", ["bob", "carol"])
    assert parse_group("Meet at 12:30: @bob carol bob") == ("Meet at 12:30", ["bob", "carol"])
    assert parse_group("Just me:") == ("Just me", [])
    assert isinstance(parse_group("Lunch bob carol"), str)  # no colon: says how
    assert isinstance(parse_group(": bob"), str)  # no title
    problem = parse_group("Lunch: bob, Carol!")
    assert isinstance(problem, str) and "Carol!" in problem

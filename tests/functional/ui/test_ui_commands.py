"""Slash commands in the composer, typed into the real app on the real server.

What must hold: a command runs and is never sent as a message; a mistyped one stays in the
composer with the reason shown; ``//`` sends a literal slash; the group commands do what
their keys do. The peers are raw websocket clients speaking only the protocol.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.ui import (
    flat,
    online,
    open_with,
    running_app,
    screen_text,
    type_and_send,
    wait_until,
)
from tests.support.wire import RunningServer, db_rows, login, recv_until
from tui_chat import protocol as p


def bodies_on_server(server: RunningServer) -> list[str]:
    return [r[0] for r in db_rows(server.db_path, "SELECT body FROM messages ORDER BY ts, seq")]


async def test_commands_run_and_are_never_sent(chat_server: RunningServer, tmp_path: Path) -> None:
    bob, *_ = await login(chat_server.url, "bob", chat_server.tokens["bob"])
    try:
        async with running_app(
            chat_server.url, chat_server.tokens["alice"], tmp_path / "alice"
        ) as (app, pilot):
            await online(app, pilot)
            # /new opens a conversation by name, after asking the server that bob exists.
            await type_and_send(pilot, "/new bob")
            await wait_until(pilot, lambda: app.peer == "bob", "the conversation with bob")
            assert app.composer.text == ""

            # A typo is not a message: it stays, with the reason, and nothing leaves.
            await type_and_send(pilot, "/hepl")
            await wait_until(
                pilot, lambda: "Unknown command /hepl" in flat(screen_text(app)), "the reason"
            )
            assert app.composer.text == "/hepl"
            app.composer.set_text("")

            # /me is an action, // a literal slash: both are sent (and arrive) as text.
            await type_and_send(pilot, "/me waves")
            await type_and_send(pilot, "//help is what I typed")
            got, _ = await recv_until(bob, p.Message)
            assert got.body == "* alice waves"
            got, _ = await recv_until(bob, p.Message)
            assert got.body == "/help is what I typed"

            # /help opens the help screen, which lists the commands.
            await type_and_send(pilot, "/help")
            await wait_until(pilot, lambda: type(app.screen).__name__ == "HelpScreen", "help")
            await pilot.press("end")  # the commands are at the foot of the list
            await wait_until(
                pilot, lambda: "/create Lunch: bob, carol" in flat(screen_text(app)), "listed"
            )
            await pilot.press("escape")
            await wait_until(pilot, lambda: type(app.screen).__name__ != "HelpScreen", "closed")

            # Tab completes a half-typed name; several candidates are shown.
            app.composer.focus()
            await pilot.press(*"/he", "tab")
            await wait_until(pilot, lambda: app.composer.text == "/help", "completed")
            app.composer.set_text("")
            await pilot.press(*"/re", "tab")
            await wait_until(
                pilot, lambda: "/remove /rename" in flat(screen_text(app)), "the candidates"
            )
            app.composer.set_text("")
            assert bodies_on_server(chat_server) == ["* alice waves", "/help is what I typed"]
    finally:
        await bob.close()


async def test_group_commands_do_what_their_keys_do(
    chat_server: RunningServer, tmp_path: Path
) -> None:
    async with running_app(chat_server.url, chat_server.tokens["alice"], tmp_path / "alice") as (
        app,
        pilot,
    ):
        await online(app, pilot)
        # Outside a group, a group command says why it cannot run and keeps the line.
        await open_with(app, pilot, "bob")
        await type_and_send(pilot, "/add carol")
        await wait_until(pilot, lambda: "Open a group first" in flat(screen_text(app)), "why")
        assert app.composer.text == "/add carol"
        app.composer.set_text("")

        await type_and_send(pilot, "/create Trip: bob")
        await wait_until(pilot, lambda: (app.peer or "").startswith("#"), "the group confirmed")
        await wait_until(
            pilot, lambda: "Group “Trip” · 2 members" in flat(screen_text(app)), "title bar"
        )
        await type_and_send(pilot, "/add carol")
        await wait_until(pilot, lambda: "3 members" in flat(screen_text(app)), "carol added")
        # The dialog's checks apply: carol is a member now.
        await type_and_send(pilot, "/add carol")
        await wait_until(
            pilot, lambda: "carol is already a member" in flat(screen_text(app)), "refused"
        )
        app.composer.set_text("")
        await type_and_send(pilot, "/rename Road trip")
        await wait_until(pilot, lambda: "Group “Road trip”" in flat(screen_text(app)), "renamed")
        await type_and_send(pilot, "/remove bob")
        await wait_until(pilot, lambda: "2 members" in flat(screen_text(app)), "bob removed")
        # /leave asks first, like F8.
        await type_and_send(pilot, "/leave")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "AskLineScreen", "asked")
        await pilot.press(*"yes", "enter")
        await wait_until(
            pilot, lambda: app._summary(app.peer or "").joined is False, "left the group"
        )
        kinds = [
            r[0]
            for r in db_rows(chat_server.db_path, "SELECT kind FROM messages ORDER BY conv, seq")
        ]
        assert kinds == ["created", "added", "renamed", "removed", "left"]
        # /quit ends the app (what is unsent stays queued in the store).
        await type_and_send(pilot, "/quit")
        await wait_until(pilot, lambda: not app.is_running, "quit")

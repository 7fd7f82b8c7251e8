"""The slash-command rules of the composer (tui_chat.ui.commands), on their own."""

from __future__ import annotations

import pytest

from tui_chat.ui.commands import BY_NAME, Invocation, Literal, Problem, complete, parse


@pytest.mark.parametrize(
    "text",
    ["hello", "/usr/bin is full", "/ shrug", "/:)", "/2fa code", "a /help in the middle", "/"],
)
def test_text_that_is_no_command_is_sent_as_typed(text: str) -> None:
    assert parse(text) == Literal(text)


def test_a_double_slash_sends_the_rest_as_text() -> None:
    assert parse("//help") == Literal("/help")
    assert parse("//") == Literal("/")


def test_a_known_command_runs_with_its_argument() -> None:
    assert parse("/me waves at\n everyone ") == Invocation(BY_NAME["me"], "waves at\n everyone")
    assert parse("/HELP") == Invocation(BY_NAME["help"], "")
    assert parse("/create Lunch: bob, carol") == Invocation(BY_NAME["create"], "Lunch: bob, carol")


def test_an_unknown_command_is_an_error_that_says_what_to_do() -> None:
    got = parse("/hepl")
    assert isinstance(got, Problem)
    assert "Unknown command /hepl" in got.reason
    assert "/help" in got.reason and "//hepl" in got.reason


def test_arguments_are_checked_against_the_command() -> None:
    missing = parse("/add")
    assert isinstance(missing, Problem) and "/add dave" in missing.reason
    extra = parse("/quit now")
    assert isinstance(extra, Problem) and "takes nothing" in extra.reason


def test_tab_completes_a_unique_prefix_and_extends_a_shared_one() -> None:
    assert complete("/he") == ("/help", ["help"])
    assert complete("/ad") == ("/add ", ["add"])  # takes an argument: a space follows
    text, names = complete("/re")
    assert text == "/re" and names == ["remove", "rename"]
    assert complete("/ren") == ("/rename ", ["rename"])
    assert complete("/zz") == ("/zz", [])
    assert complete("hello") == ("hello", [])
    assert complete("/me hi") == ("/me hi", [])


def test_group_lines_take_matrix_ids_whose_colons_are_not_the_title_s() -> None:
    from tui_chat.core.config import MXID_RE
    from tui_chat.ui.group_screens import parse_group

    def mxid(name: str) -> bool:
        return MXID_RE.match(name) is not None

    assert parse_group("Lunch: bob, carol") == ("Lunch", ["bob", "carol"])
    assert parse_group("Re: lunch: @bob") == ("Re: lunch", ["bob"])
    assert parse_group("Lunch: @bob:localhost, @carol:example.org:8448", mxid) == (
        "Lunch",
        ["@bob:localhost", "@carol:example.org:8448"],
    )
    bad = parse_group("Lunch: bob", mxid)
    assert isinstance(bad, str) and "@name:server" in bad

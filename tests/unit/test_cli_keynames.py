"""Key names in ``[keys]``: what the check accepts must include every key the app binds."""

from __future__ import annotations

from textual.binding import Binding

from tui_chat import keynames
from tui_chat.ui.app import ChatApp
from tui_chat.ui.message_view import MessageView
from tui_chat.ui.screens import HelpScreen, NewConversationScreen
from tui_chat.ui.widgets import Composer, ConversationList


def test_every_default_binding_is_a_key_terminals_send() -> None:
    """The check must accept what the app itself binds (else it would refuse its own keys)."""
    seen = 0
    for cls in (ChatApp, MessageView, Composer, ConversationList, HelpScreen):
        for binding in [*cls.BINDINGS, *NewConversationScreen.BINDINGS]:
            assert isinstance(binding, Binding)
            for key in binding.key.split(","):
                seen += 1
                assert keynames.support(key.strip()) is keynames.KeySupport.EVERYWHERE, (
                    cls.__name__,
                    binding.id,
                    key,
                )
    assert seen > 20


def test_names_no_terminal_sends_and_names_only_kitty_sends() -> None:
    never = ["Ctrl+R", "shift+ctrl+r", "alt-1", "shift+r", "alt+A", "enterr", "ctrl++", ""]
    kitty_only = ["ctrl+enter", "ctrl+shift+r", "super+a", "alt+ctrl+x"]
    everywhere = ["r", "é", "question_mark", "ctrl+r", "alt+1", "alt+shift+a", "f24", "shift+tab"]
    assert [k for k in never if keynames.support(k) is not keynames.KeySupport.NEVER] == []
    assert [
        k for k in kitty_only if keynames.support(k) is not keynames.KeySupport.KITTY_ONLY
    ] == []
    assert [
        k for k in everywhere if keynames.support(k) is not keynames.KeySupport.EVERYWHERE
    ] == []

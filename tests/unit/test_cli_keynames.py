"""Key names in ``[keys]``: what the check accepts must include every key the app binds."""

from __future__ import annotations

from textual.binding import Binding

from tui_chat import keynames
from tui_chat.ui.app import ChatApp
from tui_chat.ui.composer import Composer
from tui_chat.ui.demo_app import DemoApp
from tui_chat.ui.message_view import MessageView
from tui_chat.ui.screens import HelpScreen, NewConversationScreen
from tui_chat.ui.widgets import ConversationList


def test_every_default_binding_is_a_key_terminals_send() -> None:
    """The check must accept what the app itself binds (else it would refuse its own keys).

    A binding may add a key only some terminals send (alt+enter beside ctrl+j), but
    never consist of such keys alone, and never name a key no terminal sends.
    """
    seen = 0
    for cls in (ChatApp, DemoApp, MessageView, Composer, ConversationList, HelpScreen):
        for binding in [*cls.BINDINGS, *NewConversationScreen.BINDINGS]:
            assert isinstance(binding, Binding)
            support = [keynames.support(k.strip()) for k in binding.key.split(",")]
            seen += len(support)
            where = (cls.__name__, binding.id, binding.key)
            assert keynames.KeySupport.NEVER not in support, where
            assert keynames.KeySupport.EVERYWHERE in support, where
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

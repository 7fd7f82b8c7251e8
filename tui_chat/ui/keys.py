"""The binding ids users may remap in the ``[keys]`` table."""

from __future__ import annotations

from textual.binding import Binding


def binding_ids() -> set[str]:
    from tui_chat.ui.app import ChatApp
    from tui_chat.ui.composer import Composer
    from tui_chat.ui.demo_app import DemoApp
    from tui_chat.ui.message_view import MessageView
    from tui_chat.ui.screens import HelpScreen, NewConversationScreen
    from tui_chat.ui.widgets import ConversationList

    ids: set[str] = set()
    for cls in (
        ChatApp,
        DemoApp,
        MessageView,
        Composer,
        ConversationList,
        HelpScreen,
        NewConversationScreen,
    ):
        for binding in cls.BINDINGS:
            if isinstance(binding, Binding) and binding.id:
                ids.add(binding.id)
    return ids

"""The demo's app: the plain app plus F6 (cut / restore the network), a badge and a help line.

Only ``tui-chat`` without a config file (or ``--demo``) runs this; the real app
knows nothing about the demo.
"""

from __future__ import annotations

from typing import Any, Protocol

from rich.text import Text
from textual.binding import Binding

from tui_chat.core.engine import Engine
from tui_chat.ui.app import ChatApp


class DemoControl(Protocol):
    """What the app needs of :class:`tui_chat.demo.Demo`."""

    outage: bool

    def toggle_outage(self) -> bool: ...


class DemoApp(ChatApp):
    BINDINGS = [
        Binding("f6", "toggle_outage", "Cut/restore net", priority=True, id="demo_outage"),
    ]
    HELP_TEXT = {
        **ChatApp.HELP_TEXT,
        "demo_outage": "demo only: cut / restore the network to the local server",
    }
    STATUS_BADGE = Text(" DEMO: local server ", style="bold black on yellow")

    def __init__(self, engine: Engine, demo: DemoControl, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self.demo = demo

    def help_note(self) -> str | None:
        return "Demo: F6 cuts and restores the network to the local server."

    def action_toggle_outage(self) -> None:
        down = self.demo.toggle_outage()
        self.notify(
            "Network cut (demo): messages stay ◷ until they fail or the link returns"
            if down
            else "Network restored (demo)",
            markup=False,
        )
        self._refresh_status()

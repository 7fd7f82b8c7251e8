"""tui-chat: a terminal chat client that stays truthful on a bad network."""

__version__ = "0.1.0"

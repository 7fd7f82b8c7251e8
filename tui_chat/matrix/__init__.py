"""The Matrix back-end: the engine's transport for a Matrix homeserver (e.g. Synapse).

Engine-side like :mod:`tui_chat.core`: no Textual, no UI, no server. ``httpx`` (the
``matrix`` extra) is imported only by :mod:`tui_chat.matrix.http` and the transport, and
only when ``[server] protocol = "matrix"``. See docs/matrix.md.
"""

"""One Textual message per engine event, so the app routes each to its own handler.

The engine calls its listeners from its own code paths; the app posts each event
on its message queue as the matching class below (``post(app, event)``) and handles
it with ``@on(engine_events.MessageAdded)`` and so on. Adding an event type to
:data:`tui_chat.core.models.Event` without a class here fails at import.
"""

from __future__ import annotations

import typing
from typing import Generic, TypeVar

from textual.message import Message

from tui_chat.core import models

E = TypeVar("E", bound=models.Event)


class EngineMessage(Message, Generic[E]):
    """An engine event on the app's queue."""

    def __init__(self, event: E) -> None:
        super().__init__()
        self.event = event


class MessageAdded(EngineMessage[models.MessageAdded]):
    pass


class MessageChanged(EngineMessage[models.MessageChanged]):
    pass


class ConversationChanged(EngineMessage[models.ConversationChanged]):
    pass


class ConnectionChanged(EngineMessage[models.ConnectionChanged]):
    pass


class HistoryLoaded(EngineMessage[models.HistoryLoaded]):
    pass


class Synced(EngineMessage[models.Synced]):
    pass


class ServerNotice(EngineMessage[models.ServerNotice]):
    pass


class EpochReset(EngineMessage[models.EpochReset]):
    pass


class DeliveredAnyway(EngineMessage[models.DeliveredAnyway]):
    pass


class GapUnfillable(EngineMessage[models.GapUnfillable]):
    pass


class ConversationReplaced(EngineMessage[models.ConversationReplaced]):
    pass


_CLASSES: tuple[type[EngineMessage[typing.Any]], ...] = (
    MessageAdded,
    MessageChanged,
    ConversationChanged,
    ConnectionChanged,
    HistoryLoaded,
    Synced,
    ServerNotice,
    EpochReset,
    DeliveredAnyway,
    GapUnfillable,
    ConversationReplaced,
)
MESSAGE_FOR: dict[type[models.Event], type[EngineMessage[typing.Any]]] = {
    getattr(models, cls.__name__): cls for cls in _CLASSES
}
_missing = set(typing.get_args(models.Event)) - set(MESSAGE_FOR)
if _missing:  # pragma: no cover - caught by the first import in any test run
    raise TypeError(f"engine events without a UI message: {sorted(t.__name__ for t in _missing)}")


def wrap(event: models.Event) -> EngineMessage[typing.Any]:
    return MESSAGE_FOR[type(event)](event)

"""Engines on the Matrix back-end for tests: configs, a room between users, reading a room."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from harness.clientconf import FAST_SYNC
from harness.synapse import Account, Synapse
from tests.support.engines import Client, Engines
from tui_chat.core.config import (
    AccountSection,
    ClientConfig,
    ServerSection,
    StorageSection,
    SyncSection,
)
from tui_chat.matrix.http import MatrixHttp

# The long poll is the keepalive: one second, so a dead link is noticed within ~3 s.
MATRIX_SYNC: dict[str, Any] = {**FAST_SYNC, "ping_interval": 1.0, "ping_timeout": 1.0}


def matrix_config(
    root: Path, account: Account, url: str, *, name: str | None = None, **sync: Any
) -> ClientConfig:
    return ClientConfig(
        server=ServerSection(protocol="matrix", url=url),
        account=AccountSection(user=account.user_id, token=account.access_token),
        storage=StorageSection(dir=str(root / "clients" / (name or account.localpart))),
        sync=SyncSection(**{**MATRIX_SYNC, **sync}),
    )


async def start(
    engines: Engines, account: Account, url: str, *, name: str | None = None, **sync: Any
) -> Client:
    cfg = matrix_config(engines.root, account, url, name=name, **sync)
    return await engines.run(cfg, account.access_token)


async def room_with(hs: Synapse, owner: Account, *others: Account, name: str = "Room") -> str:
    """A group room of ``owner`` that ``others`` have joined (through the API)."""
    http = MatrixHttp(hs.url, token=owner.access_token)
    try:
        room = await http.create_room(name=name, invite=[o.user_id for o in others])
    finally:
        await http.aclose()
    for other in others:
        guest = MatrixHttp(hs.url, token=other.access_token)
        try:
            await guest.join(room)
        finally:
            await guest.aclose()
    return room


async def room_texts(hs: Synapse, reader: Account, room: str) -> list[tuple[str, str]]:
    """Every m.room.message in ``room`` as (sender, body), oldest first, read via the API."""
    http = MatrixHttp(hs.url, token=reader.access_token)
    out: list[tuple[str, str]] = []
    token: str | None = None
    try:
        while True:
            page = await http.messages(room, from_token=token, direction="b", limit=100)
            out.extend(
                (e.sender, str(e.content.get("body")))
                for e in page.chunk
                if e.type == "m.room.message"
            )
            if not page.chunk or not page.end:
                break
            token = page.end
    finally:
        await http.aclose()
    return out[::-1]


def to_builtins(value: object) -> object:
    return msgspec.to_builtins(value)

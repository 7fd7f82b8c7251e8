"""Settings of ``tui-chat-server`` (the optional ``--config server.toml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec
import platformdirs

from tui_chat import configfile

Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class ServerSection(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8765
    db: str | None = None
    certfile: str | None = None
    keyfile: str | None = None


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Characters in a message body.
    max_body: PositiveInt = 4000
    # Bytes in one websocket frame; larger frames close the connection (1009).
    max_frame: PositiveInt = 64 * 1024
    # Seconds a new connection has to send its hello.
    hello_timeout: Positive = 10.0
    # Token bucket per connection, counted in frames.
    rate: Positive = 100.0
    burst: PositiveInt = 200
    # Frames waiting to go out to one connection before it is closed as too slow.
    max_outgoing: PositiveInt = 10_000
    # ... or this many bytes of them, whichever comes first.
    max_outgoing_bytes: PositiveInt = 8 * 1024 * 1024
    # Messages waiting for the writer before new sends are rejected as unavailable.
    max_pending_writes: PositiveInt = 20_000
    # Failed logins per user name within auth_window seconds before throttling.
    auth_failures: PositiveInt = 5
    auth_window: Positive = 60.0
    # Groups: members of one group (its creator included), characters in a title, and
    # groups one account may currently be a member of.
    max_group_members: PositiveInt = 1000
    max_title: PositiveInt = 100
    max_groups_per_user: PositiveInt = 500


class Durability(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # How long the writer waits for more messages to share one commit.
    group_commit_ms: Annotated[float, msgspec.Meta(ge=0, le=100)] = 2.0
    max_batch: PositiveInt = 1000


class Keepalive(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    ping_interval: Positive | None = 20.0
    ping_timeout: Positive | None = 20.0


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    limits: Limits = msgspec.field(default_factory=Limits)
    durability: Durability = msgspec.field(default_factory=Durability)
    keepalive: Keepalive = msgspec.field(default_factory=Keepalive)


def default_db_path() -> Path:
    return platformdirs.user_data_path("tui-chat-server") / "server.db"


def load(path: Path) -> ServerConfig:
    return configfile.load(path, ServerConfig)

"""Client configs for tests and chaos runs: one fast preset, one TOML writer.

Every engine a test or schedule starts uses sub-second keepalive and backoff (``FAST_SYNC``)
so that a dead link is noticed and a restored one is used again within about a second.
:func:`write_client_toml` writes any :class:`ClientConfig` as the file ``tui-chat --config``
reads, so processes and in-process engines are configured the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import msgspec

from tui_chat.core.config import (
    AccountSection,
    ClientConfig,
    ServerSection,
    StorageSection,
    SyncSection,
)

# A blackholed link is noticed in well under a second, a refused reconnect is retried within
# half a second, a hung handshake gives up after a second.
FAST_SYNC: Final[dict[str, Any]] = {
    "backoff_initial": 0.05,
    "backoff_cap": 0.5,
    "ping_interval": 0.2,
    "ping_timeout": 0.2,
    "connect_timeout": 1.0,
    "ack_timeout": 3.0,
}


def client_config(
    store_dir: Path,
    user: str,
    token: str,
    url: str,
    *,
    ca_file: Path | None = None,
    **sync: Any,
) -> ClientConfig:
    """A config for ``user`` at ``url`` with ``FAST_SYNC`` (``sync`` overrides single keys)."""
    return ClientConfig(
        account=AccountSection(user=user, token=token),
        server=ServerSection(url=url, ca_file=None if ca_file is None else str(ca_file)),
        storage=StorageSection(dir=str(store_dir)),
        sync=SyncSection(**{**FAST_SYNC, **sync}),
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (same escapes).
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def client_toml(cfg: ClientConfig) -> str:
    """``cfg`` as TOML text: every section, every key that is set (``None`` is left out)."""
    lines: list[str] = []
    for section, values in msgspec.to_builtins(cfg).items():
        if not values:
            continue
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is not None:
                lines.append(f"{json.dumps(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def write_client_toml(path: Path, cfg: ClientConfig) -> Path:
    """Write ``cfg`` to ``path`` (mode 0600, as a file holding a token must be); return it."""
    path.write_text(client_toml(cfg), encoding="utf-8")
    path.chmod(0o600)
    return path

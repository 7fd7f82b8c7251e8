"""The base install (SQLite) needs neither psycopg nor redis-py: they are imported only
when ``--store``/``--bus`` are used (``tui_chat.server.nodes`` imports the store lazily)."""

from __future__ import annotations

import subprocess
import sys

from harness.env import subprocess_env

_CHECK = """
import sys
import tui_chat.server.cli, tui_chat.server.app, tui_chat.server.nodes, tui_chat.cli
loaded = sorted(m for m in ("psycopg", "redis", "asyncpg") if m in sys.modules)
assert not loaded, loaded
"""


def test_serving_sqlite_imports_no_postgresql_or_redis_client() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHECK],
        env=subprocess_env(None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr

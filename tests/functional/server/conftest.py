"""The server tests that define the protocol's behaviour run against both stores.

Every test here that starts an in-process server (``chat_server``, ``chat_server_factory``)
runs twice: on the embedded SQLite database, and as a node on a throwaway PostgreSQL with a
throwaway Redis as its bus. A test about SQLite itself (its file, its migrations) is marked
``sqlite_only``.
"""

from __future__ import annotations

import pytest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "chat_server_factory" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("sqlite_only") is not None:
        return
    metafunc.parametrize("store_kind", ["sqlite", "postgresql"])

"""Fixtures for the Matrix back-end: one real Synapse per test session.

``synapse``  a started :class:`harness.synapse.Synapse` (SQLite, 127.0.0.1, an ephemeral
             port), shared by every test of the session: tests register their own users
             (``synapse.register("alice")`` gives a unique name), so they never see each
             other's rooms. Stopped at the end of the session.

Every test here is skipped, with the reason, when synapse is not importable (the test
extra is not installed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.synapse import Synapse, available

if not available():
    pytest.skip(
        "matrix-synapse is not installed (pip install -e '.[test]')", allow_module_level=True
    )


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    hs = Synapse(Path(tmp_path_factory.mktemp("synapse")))
    hs.start()
    try:
        yield hs
    finally:
        hs.stop()

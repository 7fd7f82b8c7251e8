"""Fixtures for the Matrix back-end: one real Synapse per test session.

``synapse``  a started :class:`harness.synapse.Synapse` (SQLite, 127.0.0.1, an ephemeral
             port), shared by every test of the session: tests register their own users
             (``synapse.register("alice")`` gives a unique name), so they never see each
             other's rooms. Stopped at the end of the session.

When synapse is not importable (the test extra is not installed) the other modules here
are not collected and ``test_requires_synapse.py`` reports the skip with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.synapse import Synapse, available

if not available():
    collect_ignore = [
        p.name
        for p in Path(__file__).parent.glob("test_*.py")
        if p.name != "test_requires_synapse.py"
    ]


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    hs = Synapse(Path(tmp_path_factory.mktemp("synapse")))
    hs.start()
    try:
        yield hs
    finally:
        hs.stop()

"""Says plainly why the Matrix tests did not run, when they did not."""

from __future__ import annotations

import pytest

from harness.synapse import available


def test_synapse_is_installed() -> None:
    if not available():
        pytest.skip("matrix-synapse is not installed: pip install -e '.[test]' runs tests/matrix")

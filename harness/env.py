"""The environment for subprocesses that run harness modules (``python -m harness.…``).

The harness is not installed (the wheel ships only ``tui_chat``), so a child process finds it
only if the checkout is on its ``PYTHONPATH``: this puts it there, first, whatever the
working directory of the test run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

# The checkout: the directory that holds the ``harness`` package.
REPO_ROOT: Final = Path(__file__).resolve().parent.parent


def subprocess_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: this process's environment) plus the checkout on ``PYTHONPATH``."""
    env = dict(os.environ if base is None else base)
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.update(extra)
    return env

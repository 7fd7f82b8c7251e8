"""The built wheel ships the product and nothing of the test harness.

The chaos runner, the checker, the broken variants, the fault proxy and the server-process
helper live in ``harness/`` at the repository root; ``pyproject.toml`` packages only
``tui_chat*``. This builds the wheel from a copy of the checkout (so the build leaves
nothing in it) and reads the archive.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from harness.env import REPO_ROOT

# Words that name harness code; no path in the wheel may contain one.
HARNESS_WORDS = ("harness", "testing", "chaos", "checker", "broken", "faultproxy", "serverproc")
HARNESS_IMPORT = re.compile(r"^\s*(from|import)\s+harness\b", re.MULTILINE)
COPIED = ("pyproject.toml", "README.md", "LICENSE", "tui_chat", "harness", "tests", "benchmarks")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*_cache")
    for name in COPIED:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"pip wheel failed:\n{done.stdout}\n{done.stderr}"
    (built,) = out.glob("tui_chat-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_only_the_tui_chat_package(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert "tui_chat" in tops
    assert {t for t in tops if not t.endswith(".dist-info")} == {"tui_chat"}
    names = set(wheel.namelist())
    # The product itself is there (guards against the check passing on an empty wheel).
    for module in ("cli.py", "demo.py", "demo_link.py", "core/engine.py", "server/app.py"):
        assert f"tui_chat/{module}" in names
    assert any(n.startswith("tui_chat/ui/") and n.endswith(".tcss") for n in names)


def test_the_wheel_has_no_harness_code(wheel: zipfile.ZipFile) -> None:
    offenders = [name for name in wheel.namelist() if any(w in name.lower() for w in HARNESS_WORDS)]
    assert not offenders, f"harness files in the wheel: {offenders}"
    importers = [
        name
        for name in wheel.namelist()
        if name.endswith(".py") and HARNESS_IMPORT.search(wheel.read(name).decode("utf-8"))
    ]
    assert not importers, f"wheel modules that import the harness: {importers}"

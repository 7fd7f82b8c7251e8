"""Layer rules that must hold even where import-linter is not run.

``core``, ``server`` and ``protocol`` never import Textual or Rich (see the
"Layers" section of the design notes and ``[tool.importlinter]`` in
pyproject.toml). This reads the source with ``ast`` rather than importing it, so
it also catches imports inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tui_chat"
FORBIDDEN = frozenset({"textual", "rich"})
TEXTUAL_FREE = (PACKAGE / "core", PACKAGE / "server", PACKAGE / "protocol.py")
DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__"})


def _python_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        yield from sorted(path.rglob("*.py"))


def _imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Yield (line, module name) for every absolute import in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            # Relative imports stay inside tui_chat, so they cannot reach Textual.
            if node.level == 0 and node.module is not None:
                yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args:
            # importlib.import_module("textual") / __import__("rich") with a literal name.
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (
                name in DYNAMIC_IMPORTERS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield node.lineno, first.value


def _textual_free_files() -> list[Path]:
    return [f for path in TEXTUAL_FREE for f in _python_files(path)]


def test_layer_files_are_found() -> None:
    # Guard against the rule passing vacuously because the paths moved.
    files = _textual_free_files()
    assert PACKAGE / "protocol.py" in files
    assert (PACKAGE / "core").is_dir()
    assert (PACKAGE / "server").is_dir()


@pytest.mark.parametrize("path", _textual_free_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_server_and_protocol_do_not_import_textual_or_rich(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for line, module in _imported_modules(tree)
        if module.partition(".")[0] in FORBIDDEN
    ]
    assert not offenders, "core, server and protocol must not import textual or rich:\n" + (
        "\n".join(offenders)
    )


def test_console_entry_points_are_declared() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        pyproject = tomllib.load(f)
    scripts = pyproject["project"]["scripts"]
    assert scripts.get("tui-chat") == "tui_chat.cli:main"
    assert scripts.get("tui-chat-server") == "tui_chat.server.cli:main"

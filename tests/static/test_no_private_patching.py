"""Nothing outside the broken variants patches a private attribute of our code.

A test or harness that replaces ``Engine._send_frame`` (or any ``_name``) breaks silently
when the engine renames it: the patch then sets a new attribute nobody calls, and the proof
it was part of proves nothing. The engine offers public seams instead (``subscribe``,
``observe_frames``). Only ``harness/broken.py`` may patch, since breaking things from the
outside is its job.

Checked with ``ast`` over ``tests/`` and ``harness/``: an assignment to ``x._name`` where
``x`` is not ``self``/``cls``, ``setattr(x, "_name", ...)`` and
``monkeypatch.setattr(x, "_name", ...)``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from harness.env import REPO_ROOT

SCANNED = ("tests", "harness")
ALLOWED: frozenset[str] = frozenset({"harness/broken.py"})


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _patches(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                if (
                    isinstance(t, ast.Attribute)
                    and _private(t.attr)
                    and not (isinstance(t.value, ast.Name) and t.value.id in ("self", "cls"))
                ):
                    yield node.lineno, ast.unparse(t)
        if isinstance(node, ast.Call) and len(node.args) >= 2:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            attr = node.args[1]
            if (
                name in ("setattr", "delattr")
                and isinstance(attr, ast.Constant)
                and isinstance(attr.value, str)
                and _private(attr.value)
            ):
                yield node.lineno, ast.unparse(node)


def _files() -> list[Path]:
    return [f for d in SCANNED for f in sorted((REPO_ROOT / d).rglob("*.py"))]


def _offenders() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in _files():
        rel = path.relative_to(REPO_ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        hits = [f"{rel}:{line}: {what}" for line, what in _patches(tree)]
        if hits:
            found[rel] = hits
    return found


def test_the_scan_finds_the_broken_variants_patches() -> None:
    # Guards against the rule passing vacuously (paths moved, the scan blind).
    assert "harness/broken.py" in _offenders()


def test_no_test_or_harness_file_patches_a_private_attribute() -> None:
    bad = [hit for rel, hits in _offenders().items() if rel not in ALLOWED for hit in hits]
    assert not bad, "patches of private attributes (use a public seam):\n" + "\n".join(bad)


def test_the_scan_sees_every_form_of_patch() -> None:
    code = (
        "Engine._send_frame = f\n"
        "engine._dispatch = g\n"
        "self._mine = 1\n"
        "setattr(Engine, '_request_gap', h)\n"
        "monkeypatch.setattr(engine, '_online', True)\n"
        "obj.public = 2\n"
        "obj.__dict__ = {}\n"
    )
    found = [what for _line, what in _patches(ast.parse(code))]
    assert found == [
        "Engine._send_frame",
        "engine._dispatch",
        "setattr(Engine, '_request_gap', h)",
        "monkeypatch.setattr(engine, '_online', True)",
    ]

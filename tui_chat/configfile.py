"""Loading TOML files into msgspec Structs with errors a person can act on.

Shared by the server's and the client's configuration: both want one message
that names the file, the key and what was expected, and never a traceback.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TypeVar

import msgspec

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration file that cannot be used; ``str()`` is the whole message."""

    def __init__(self, path: Path | None, key: str | None, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = str(path) if path is not None else "configuration"
        if key:
            # repr: a quoted TOML key may hold a newline or ESC, and the message is one line.
            where += f": key {key!r}"
        super().__init__(f"{where}: {problem}")


_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _dotted(json_path: str) -> str:
    # msgspec reports "$.a.b[0]"; people write TOML keys as "a.b".
    return json_path.lstrip(".").replace("[", ".").replace("]", "")


def _locate(data: object, json_path: str, message: str) -> str:
    """The dotted key for msgspec's path, naming the table entry where it says ``[...]``.

    msgspec reports a bad value inside a table of free-form keys (such as
    ``[keys]``) as ``$.keys[...]``; the person needs to know which entry.
    """
    dotted = _dotted(json_path)
    if "[...]" not in json_path:
        return dotted
    parent = json_path.split("[...]", 1)[0]
    node = data
    for part in parent.lstrip("$.").split("."):
        if not part:
            continue
        if not isinstance(node, dict) or part not in node:
            return dotted
        node = node[part]
    expected = re.match(r"Expected `(?P<type>\w+)`", message)
    if isinstance(node, dict) and expected:
        types: dict[str, type | tuple[type, ...]] = {
            "str": str,
            "int": int,
            "float": (int, float),
            "bool": bool,
        }
        want = types.get(expected.group("type"))
        for name, value in node.items():
            if want is not None and not isinstance(value, want):
                return f"{_dotted(parent)}.{name}"
    return dotted


def convert(data: object, typ: type[T], path: Path | None = None) -> T:
    """Validate already-parsed TOML data against ``typ``."""
    try:
        return msgspec.convert(data, typ, strict=True)
    except msgspec.ValidationError as exc:
        message = str(exc)
        key: str | None = None
        m = _PATH_RE.search(message)
        if m:
            key = _locate(data, m.group("path"), message)
            message = message[: m.start()]
        unknown = re.match(r"Object contains unknown field `(?P<field>[^`]+)`", message)
        missing = re.match(r"Object missing required field `(?P<field>[^`]+)`", message)
        if missing:
            key = f"{key}.{missing.group('field')}" if key else missing.group("field")
            message = "required key is missing"
        elif unknown:
            field = unknown.group("field")
            key = f"{key}.{field}" if key else field
            message = "unknown key (check the spelling; see the template for valid keys)"
        else:
            message = message[0].lower() + message[1:] if message else message
            message = message.replace("`", "")
        raise ConfigError(path, key, message) from None


def load(path: Path, typ: type[T]) -> T:
    """Read and validate a TOML file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, None, "file not found") from None
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, f"not valid UTF-8 (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"invalid TOML: {exc}") from None
    return convert(data, typ, path)

"""The config template and docs/config.md are made from the config Structs, and stay so.

Defaults and descriptions are written once, in tui_chat/core/config.py; these tests fail
when the committed documentation is stale, when a setting lacks a description, or when
the template would not load or would set something other than the defaults.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec

from tests.support.cli import uncomment_template
from tui_chat import config_template
from tui_chat.cli import TEMPLATE  # what `config init` writes
from tui_chat.core import config as client_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_docs_config_md_is_generated_from_the_structs() -> None:
    text = DOC.read_text(encoding="utf-8")
    regenerated = config_template.splice(text, config_template.markdown())
    assert text == regenerated, (
        "docs/config.md is stale: run python -m tui_chat.config_template docs/config.md"
    )


def test_every_setting_is_described_and_appears_in_template_and_docs() -> None:
    doc = config_template.markdown()
    count = 0
    for section in config_template.sections():
        assert section.description, section.name
        assert f"[{section.name}]" in TEMPLATE and f"`[{section.name}]`" in doc
        if section.free_form:
            continue
        for setting in section.settings:
            count += 1
            assert setting.description, f"{section.name}.{setting.name} has no description"
            assert re.search(rf"^(# )?{setting.name} = ", TEMPLATE, re.M), setting.name
            assert f"| `{setting.name}` |" in doc, setting.name
    assert count == sum(
        len(msgspec.structs.fields(cls))
        for cls in (
            client_config.ServerSection,
            client_config.AccountSection,
            client_config.StorageSection,
            client_config.SyncSection,
            client_config.UiSection,
        )
    )


def test_the_template_says_the_defaults_the_loader_uses(tmp_path: Path) -> None:
    """Uncomment everything: the result loads and equals the defaults (plus the examples)."""
    text = uncomment_template(TEMPLATE).replace(
        "paste the token from `tui-chat-server add-user alice` here", "s3cret"
    )
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    loaded = client_config.load(path)
    data = tomllib.loads(text)
    expected = client_config.ClientConfig(
        account=client_config.AccountSection(user="alice", token="s3cret"),
        storage=client_config.StorageSection(dir=data["storage"]["dir"]),
        keys=data["keys"],
    )
    assert loaded == expected
    # And as written by `config init`, it loads once the token is pasted.
    path.write_text(TEMPLATE.replace("paste the token from", "x").replace(" here", ""), "utf-8")
    assert client_config.load(path).server == client_config.ServerSection()

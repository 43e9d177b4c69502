"""README's scenario block documents every scenario key with the default the dataclasses define."""

from __future__ import annotations

import re
import tomllib
from dataclasses import MISSING, fields
from pathlib import Path

from pdasgd import scenario as sc

README = Path(__file__).resolve().parent.parent / "README.md"
SECTIONS = {
    "": sc.Header,
    "model": sc.UniformModel,
    "model.layer": sc.Layer,
    "workers": sc.Workers,
    "delays": sc.Delays,
    "delays.straggler": sc.Straggler,
    "delays.comm": sc.CommDelay,
    "device": sc.Device,
    "train": sc.Train,
    "run": sc.Run,
    "distributed": sc.Distributed,
}


def scenario_block() -> list[str]:
    text = README.read_text(encoding="utf-8")
    after = text[text.index("## Scenario files") :]
    return after[after.index("```toml") + len("```toml") : after.index("```\n", 8)].splitlines()


def documented() -> dict[str, dict[str, object]]:
    """section -> key -> value, from the block's lines, commented out or not."""
    found: dict[str, dict[str, object]] = {}
    section = ""
    for line in scenario_block():
        line = line.strip().removeprefix("#").strip()
        header = re.match(r"^\[\[?([\w.]+)\]\]?", line)
        if header:
            section = header.group(1)
            continue
        pair = re.match(r"^(\w+) = (.+?)(\s+#.*)?$", line)
        if pair and section in SECTIONS:
            found.setdefault(section, {})[pair.group(1)] = tomllib.loads(f"v = {pair.group(2)}")["v"]
    return found


def test_every_key_is_documented_with_its_default() -> None:
    found = documented()
    for section, cls in SECTIONS.items():
        for item in fields(cls):
            if item.name in ("stragglers", "comm"):  # the [[delays.straggler]] and [[delays.comm]] tables
                continue
            assert item.name in found.get(section, {}), f"README lacks {section}.{item.name}"
            if item.default is not MISSING:
                assert found[section][item.name] == item.default, f"{section}.{item.name}"


def test_no_documented_key_is_unknown() -> None:
    for section, keys in documented().items():
        names = {item.name for item in fields(SECTIONS[section])}
        assert set(keys) <= names, (section, set(keys) - names)


def test_the_layout_names_every_module() -> None:
    text = README.read_text(encoding="utf-8")
    layout = text[text.index("## Layout") :]
    root = README.parent
    for package in ("pdasgd", "pdasgd/cli", "theory", "simulator", "executor"):
        for module in sorted((root / package).glob("*.py")):
            if module.name == "__init__.py" or package == "pdasgd/cli":
                continue
            assert module.stem in layout, f"README's Layout does not name {package}/{module.name}"
    assert "cli/" in layout

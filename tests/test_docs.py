"""The configuration reference in README.md documents every configuration key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from vmond.config.schema import SECTIONS, key_paths

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PRODUCTION = ROOT / "config" / "vmond.yaml"


LEAVES = {path for path in key_paths()
          if not any(other.startswith((f"{path}.", f"{path}[].")) for other in key_paths())}


def walk(node: object, prefix: str = "") -> set[str]:
    """Dotted key paths in a loaded YAML document; list items become ``[]``."""
    paths: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            paths.add(prefix + key)
            if prefix + key not in LEAVES:  # a mapping of the user's own keys, e.g. events.priorities
                paths |= walk(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for item in node:
            paths |= walk(item, prefix[:-1] + "[].")
    return paths


def production_paths() -> set[str]:
    """Keys of config/vmond.yaml, including its commented-out accounts example."""
    text = PRODUCTION.read_text()
    lines = text.splitlines()
    example = "\n".join(line[2:] for line in lines[lines.index("# accounts:"):] if line.startswith("#"))
    return walk(yaml.safe_load(text)) | walk(yaml.safe_load(example))


def documented() -> set[str]:
    return set(re.findall(r"`([^`\s]+)`", README.read_text()))


def test_readme_exists() -> None:
    assert README.is_file(), "README.md with the configuration reference is missing"


@pytest.mark.parametrize("path", sorted(production_paths()))
def test_every_key_in_the_production_file_is_documented(path: str) -> None:
    assert path in documented(), f"`{path}` is not in README.md"


@pytest.mark.parametrize("path", key_paths())
def test_every_schema_key_is_documented(path: str) -> None:
    assert path in documented(), f"`{path}` is not in README.md"


def test_documented_keys_exist() -> None:
    # Catches keys renamed or removed in the code but left in the README.
    dotted = re.compile(r"(?:[a-z_]+(?:\[\])?\.)+[a-z_]+")
    stale = {token for token in documented()
             if dotted.fullmatch(token) and token.split(".")[0].removesuffix("[]") in SECTIONS
             and token not in key_paths()}
    assert not stale


def test_tables_have_headers_and_the_api_table_names_each_route_once() -> None:
    # Merged sections must not leave a second, stale row for a route, nor split a table with a blank line (the rows
    # after it would no longer be a table).
    blocks: list[list[str]] = []
    previous = ""
    for line in README.read_text().splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                blocks.append([])
            blocks[-1].append(line)
        previous = line
    headless = [block[0][:80] for block in blocks if len(block) < 2 or not re.match(r"^\|\s*:?-", block[1])]
    assert not headless, headless
    routes = [line.split("|")[1].strip() for block in blocks for line in block if "/api/" in line.split("|")[1]]
    assert len(routes) == len(set(routes)), sorted({r for r in routes if routes.count(r) > 1})

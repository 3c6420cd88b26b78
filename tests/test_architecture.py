"""docs/architecture.md stays true: the import direction it draws, the files it names, and
the size rule that keeps one concept per module (issue #11)."""

from __future__ import annotations

import ast
import re
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "klingflow"
DOC = ROOT / "docs" / "architecture.md"

# What each part may import of ours (the arrows of the page's diagram). The top-level rule
# modules (errors, problems, ...) are imported by everyone.
ALLOWED: dict[str, set[str]] = {
    "piapi": set(),
    "emulator": {"piapi"},
    "workflows": {"piapi"},
    "service": {"piapi", "workflows"},
    "cli": {"piapi", "workflows", "service", "emulator"},
}
TOP_LEVEL_RULES = {
    "errors", "problems", "redaction", "payloads", "settings", "formats", "extras", "_exports",
}  # fmt: skip
# The sync/async client pair repeats by design (httpx's shape) and may stay long.
LONG_BY_DESIGN = {"piapi/_client.py"}
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module a module imports at run time, at any depth (`TYPE_CHECKING` blocks,
    read by the type checker alone, are left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _part(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_the_page_says(part: str) -> None:
    wrong = []
    for path in _modules():
        if _part(path) != part:
            continue
        for name in _imports(path):
            if not name.startswith("klingflow."):
                continue
            target = name.split(".")[1]
            if target in {part, *TOP_LEVEL_RULES, *ALLOWED[part]}:
                continue
            wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_top_level_rules_import_no_part() -> None:
    wrong = [
        f"{path.name} imports {name}"
        for path in _modules()
        if _part(path) in TOP_LEVEL_RULES
        for name in _imports(path)
        if name.startswith("klingflow.") and name.split(".")[1] in ALLOWED
    ]
    assert not wrong, "\n".join(wrong)


def test_only_the_engine_package_imports_dbos() -> None:
    importers = {
        str(path.relative_to(PACKAGE))
        for path in _modules()
        if any(name == "dbos" or name.startswith("dbos.") for name in _imports(path))
    }
    assert importers, "the engine no longer imports dbos: the test is out of date"
    assert all(name.startswith("workflows/engine/") for name in importers), importers


def test_no_module_holds_more_than_one_concepts_worth_of_lines() -> None:
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
        for path in _modules()
    }
    too_long = {
        name: lines
        for name, lines in sizes.items()
        if lines > MAX_LINES and name not in LONG_BY_DESIGN
    }
    assert not too_long, too_long
    assert statistics.median(sizes.values()) < 200


def test_every_file_the_page_names_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:[a-z_]+/)*[a-z_<>]+\.py)`", text))
    named |= set(re.findall(r"`([a-z_]+/(?:[a-z_]+/)*)`", text))
    assert len(named) > 20, "the page names fewer files than it did: is the pattern stale?"
    missing = []
    for name in sorted(named):
        if "<" in name:  # a placeholder, e.g. nodes/<kind>.py
            continue
        candidates = [PACKAGE / name, PACKAGE / "workflows" / name, ROOT / name]
        if "/" not in name:  # a module named in its folder's sentence: `runs.py` of service/api
            candidates += list(PACKAGE.rglob(name))
        if not any(candidate.exists() for candidate in candidates):
            missing.append(name)
    assert not missing, missing

"""The README is part of the product: its reference tables match the code, its commands work."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from jobrl_async.cli import build_parser
from jobrl_async.config import SECTIONS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of a `## title` section, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def documented_keys() -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for name, body in re.findall(r"^### \[(\w+)\]\n(.*?)(?=^### |\Z)", section("Configuration"), re.S | re.M):
        keys[name] = re.findall(r"^\| `(\w+)` \|", body, re.M)
    return keys


def test_every_config_key_is_documented_and_nothing_else() -> None:
    documented = documented_keys()
    assert set(documented) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        assert documented[name] == [f.name for f in fields(cls)], f"[{name}] table differs from the code"


def test_every_command_is_in_the_command_table() -> None:
    table = section("Commands")
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    for name, command in sub.choices.items():
        children = [a for a in command._actions if a.dest == "subcommand"]
        names = [f"{name} {child}" for child in children[0].choices] if children else [name]
        for full in names:
            assert f"`jobrl-async {full}" in table, f"'{full}' is not in the README's command table"


def quick_start_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", section("Quick start (CPU, no keys)"), re.S)
    assert block
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_opening_commands_are_the_quick_start_and_the_tests() -> None:
    first = re.search(r"```bash\n(.*?)```", README, re.S)
    assert first
    lines = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert lines == ["bin/jobrl-async run --dry-run --max-steps 3", "bin/test"]
    assert quick_start_commands()[0] == lines[0]
    assert "bin/test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_quick_start_commands_work_as_written(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    for command in quick_start_commands():
        runnable = re.sub(r"(^|\s)bin/", rf"\g<1>{ROOT}/bin/", command)
        r = subprocess.run(["bash", "-c", runnable], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{command!r} failed:\n{r.stderr[-2000:]}"
        assert r.stdout.strip(), f"{command!r} printed nothing"

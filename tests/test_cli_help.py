"""Every command's --help renders with the installed click (click 8.2 changed how option types are asked for
their metavar; a help page that raises is the first thing a new user sees)."""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from archfamily.cli.main import cli


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths += _command_paths(command, prefix + (name,))
        else:
            paths.append(prefix + (name,))
    return paths


@pytest.mark.parametrize("path", _command_paths(cli), ids=lambda path: " ".join(path) or "archfamily")
def test_help_renders(run_cli, path: tuple[str, ...]) -> None:
    result = run_cli(*path, "--help")
    assert result.code == 0, result.err
    assert "Usage:" in result.out and "Traceback" not in result.err


def test_derive_help_gives_the_quick_presets_measured_time_as_the_readme_does(run_cli) -> None:
    text = " ".join(run_cli("derive", "--help").out.split())  # as one line: click wraps it where it likes
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    quick = next(line for line in readme.splitlines() if line.startswith("archfamily derive --preset quick"))
    minutes = re.search(r"quick: ~(\d+) min on a 2-core CPU", text)
    assert minutes and f"~{minutes[1]} min on a 2-core CPU" in quick, (text, quick)  # 26 min here, not 10

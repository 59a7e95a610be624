"""Every command's --help renders with the installed click (click 8.2 changed how option types are asked for
their metavar; a help page that raises is the first thing a new user sees)."""
from __future__ import annotations

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

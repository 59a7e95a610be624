"""Plug-ins from other installed packages: a base family, a saliency criterion, a scaling rule or a bench runtime
that a package registers when the `archfamily` command starts.

A package declares an entry point in the group `archfamily.plugins` (in its pyproject.toml:
`[project.entry-points."archfamily.plugins"] vgg = "mypkg.vgg:register"`); the command loads each one before it
builds its options (the `--method` and `--rule` choices read the registries then) and calls it when it is a
function. A study's runs start the same command, so they see the same plug-ins.
"""
from __future__ import annotations

import importlib.metadata

import click

GROUP = "archfamily.plugins"


def load_plugins() -> list[str]:
    """Load every installed plug-in; the names loaded. One that fails is one line on stderr, not the end of the
    command (the built-in families and the other plug-ins still work)."""
    loaded = []
    for entry in importlib.metadata.entry_points(group=GROUP):
        try:
            target = entry.load()
            if callable(target):
                target()
        except Exception as exc:  # a third party's import error, whatever it is
            click.echo(f"archfamily: warning: plug-in {entry.name} ({entry.value}) did not load: "
                       f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", err=True)
        else:
            loaded.append(entry.name)
    return loaded

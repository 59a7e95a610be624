"""`archfamily`: the command group and the console-script entry point.

Every command reports bad input as one line on stderr with exit code 2 (a setting the
library refuses named by its flag); an interrupted run says how to resume it and exits with 130.
"""
from __future__ import annotations

import sys
from typing import Optional

import click

from archfamily import __version__
from archfamily.errors import SettingError, UserError
from archfamily.cli.plugins import load_plugins
import archfamily.anycnn.family  # noqa: F401,E402  (the timm family: `--base timm:NAME`)

load_plugins()  # before the commands are imported: their choices read the registries plug-ins add to

from archfamily.cli.bench import bench  # noqa: E402
from archfamily.cli.check import check  # noqa: E402
from archfamily.cli.derive import derive  # noqa: E402
from archfamily.cli.export import export  # noqa: E402
from archfamily.cli.measure import measure  # noqa: E402
from archfamily.cli.scale import scale  # noqa: E402
from archfamily.cli.study import study  # noqa: E402
from archfamily.cli.train import train  # noqa: E402
from archfamily.cli.zoo import zoo  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="archfamily")
def cli() -> None:
    """Turn one structured-pruning run into a family of CNN architectures at any budget."""


cli.add_command(derive)
cli.add_command(scale)
cli.add_command(train)
cli.add_command(measure)
cli.add_command(export)
cli.add_command(zoo)
cli.add_command(bench)
cli.add_command(study)
cli.add_command(check)


def _flags(argv: list[str]) -> dict[str, str]:
    """The long flag of each option of the command `argv` runs, by the names a library setting may have for it:
    the option's parameter name (`cost_on`) and its flag's (`--on`: `on`)."""
    command: click.Command = cli
    for arg in argv:
        if not isinstance(command, click.Group):
            break
        command = command.commands.get(arg, command)
    flags: dict[str, str] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
            flags[param.name or ""] = flag
            flags.setdefault(flag.lstrip("-").replace("-", "_"), flag)
    return flags


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry: click without its tracebacks or multi-line usage errors."""
    try:
        cli.main(args=argv, prog_name="archfamily", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        click.echo(f"archfamily: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except SettingError as exc:
        click.echo(f"archfamily: error: {exc.named(_flags(sys.argv[1:] if argv is None else argv))}", err=True)
        sys.exit(2)
    except UserError as exc:
        click.echo(f"archfamily: error: {exc}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, click.Abort):
        click.echo("\narchfamily: interrupted; run the same command with --resume to continue", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()

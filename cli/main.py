"""`archfamily`: the command group and the console-script entry point.

Every command reports bad input as one line on stderr with exit code 2; an
interrupted run says how to resume it and exits with 130.
"""
from __future__ import annotations

import sys
from typing import Optional

import click

from archfamily import __version__
from archfamily.errors import UserError
from archfamily.cli.bench import bench
from archfamily.cli.derive import derive
from archfamily.cli.export import export
from archfamily.cli.measure import measure
from archfamily.cli.scale import scale
from archfamily.cli.study import study
from archfamily.cli.train import train
from archfamily.cli.zoo import zoo


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


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry: click without its tracebacks or multi-line usage errors."""
    try:
        cli.main(args=argv, prog_name="archfamily", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        click.echo(f"archfamily: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except UserError as exc:
        click.echo(f"archfamily: error: {exc}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, click.Abort):
        click.echo("\narchfamily: interrupted; run the same command with --resume to continue", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()

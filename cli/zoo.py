"""`archfamily zoo list | eval | add | remove`: the trained networks `import archfamily.zoo` registers with timm."""
from __future__ import annotations

import json
import re
from typing import Optional

import click

from archfamily.limits import format_count
from archfamily.cli.options import data_options


@click.group()
def zoo() -> None:
    """The model zoo: list it, re-measure an entry, add a trained network, remove one."""


@zoo.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest entries as JSON.")
def list_entries(as_json: bool) -> None:
    """The zoo table: params, MACs and measured CIFAR-10 test error of every entry."""
    from archfamily.zoo.manifest import read_manifest

    entries = read_manifest()
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    rows = [(f"{e['name']}.{e['tag']}", format_count(e["params"]), format_count(e["macs"]), f"{e['test_error']:.2f}%",
             f"{e['test_images']:,}", " ".join(x for x in (e["source"]["rule"], e["source"]["family"]) if x))
            for e in entries]
    rows.sort(key=lambda row: _natural_key(row[0]))  # as timm.list_models orders names: 76k before 152k
    head = ("name", "params", "MACs", "test error", "images", "source")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(5)]  # each column as wide as its longest
    for row in [head, *rows]:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:5], widths[1:])]
        click.echo((" ".join(cells) + "  " + row[5]).rstrip())


def _natural_key(name: str) -> list:
    """timm's sort key for model names: runs of digits compared as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


@zoo.command(name="eval")
@click.argument("name")
@click.option("--write", is_flag=True, help="Record the measured error in the manifest.")
@data_options
def eval_entry(name: str, write: bool, data: Optional[str], test_subset: Optional[int], device: str) -> None:
    """Measure NAME's CIFAR-10 test error through timm.create_model(NAME, pretrained=True)."""
    from archfamily.data.dataset import load_data
    from archfamily.training.distributed import resolve_device
    from archfamily.zoo.curation import remeasure
    from archfamily.zoo.manifest import entry_named, zoo_dir

    entry_named(name, zoo_dir())  # an unknown name is refused before any image is decoded
    dev = resolve_device(device)
    entry, error = remeasure(name, load_data(data, subset=10, test_subset=test_subset), dev, write)
    click.echo(f"{entry['name']}: test error {error:.2f}% (manifest: {entry['test_error']:.2f}% on "
               f"{entry['test_images']:,} images){'; written to the manifest' if write else ''}")


@zoo.command(name="add")
@click.argument("source")
@click.option("--name", required=True, help="Zoo name; the archfamily_ prefix is added if missing.")
@click.option("--family", "family", help="The family it came from [the derive run it sits in].")
@click.option("--rule", help="The rule that made it, e.g. copycat [base / pruned for derive outputs].")
@click.option("--replace", is_flag=True, help="Replace an entry of the same name.")
@data_options
def add_entry(source: str, name: str, family: Optional[str], rule: Optional[str], replace: bool, data: Optional[str],
              test_subset: Optional[int], device: str) -> None:
    """Measure SOURCE (a model .safetensors, a train run folder, or an export folder, loaded as timm's local-dir:
    loads it) through timm, then add it to the zoo."""
    from archfamily.data.dataset import load_data
    from archfamily.training.distributed import resolve_device
    from archfamily.zoo.curation import add

    entry = add(source, name, lambda: load_data(data, subset=10, test_subset=test_subset), resolve_device(device),
                family, rule, replace=replace)
    click.echo(f"added {entry['name']}.{entry['tag']}: {entry['params']:,} params, test error "
               f"{entry['test_error']:.2f}% on {entry['test_images']:,} images")


@zoo.command(name="remove")
@click.argument("names", nargs=-1, required=True)
def remove_entries(names: tuple[str, ...]) -> None:
    """Remove the entries NAMES (and their weights) from the zoo."""
    from archfamily.zoo.curation import removable, remove

    entries = {removable(name)["name"]: None for name in names}  # all must be removable before any is removed
    for name in entries:
        entry = remove(name)
        click.echo(f"removed {entry['name']}.{entry['tag']} ({entry['file']})")

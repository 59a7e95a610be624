"""`archfamily zoo list | eval | add | remove`: the trained networks `import archfamily.zoo` registers with timm."""
from __future__ import annotations

import json
from typing import Optional

import click

from archfamily.units import format_count
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
    click.echo(f"{'name':<44} {'params':>9} {'MACs':>7} {'test error':>10} {'images':>7}  source")
    for e in entries:
        source = " ".join(x for x in (e["source"]["rule"], e["source"]["family"]) if x)
        click.echo(f"{e['name'] + '.' + e['tag']:<44} {format_count(e['params']):>9} {format_count(e['macs']):>7} "
                   f"{e['test_error']:>9.2f}% {e['test_images']:>7,}  {source}")


@zoo.command(name="eval")
@click.argument("name")
@click.option("--write", is_flag=True, help="Record the measured error in the manifest.")
@data_options
def eval_entry(name: str, write: bool, data: Optional[str], test_subset: Optional[int], device: str) -> None:
    """Measure NAME's CIFAR-10 test error through timm.create_model(NAME, pretrained=True)."""
    from archfamily.data.cifar import load_cifar10
    from archfamily.training.distributed import resolve_device
    from archfamily.zoo.curation import remeasure

    dev = resolve_device(device)
    entry, error = remeasure(name, load_cifar10(data, subset=10, test_subset=test_subset), dev, write)
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
    """Measure SOURCE (a model .safetensors or a train run folder) through timm, then add it to the zoo."""
    from archfamily.data.cifar import load_cifar10
    from archfamily.training.distributed import resolve_device
    from archfamily.zoo.curation import add

    entry = add(source, name, load_cifar10(data, subset=10, test_subset=test_subset), resolve_device(device),
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

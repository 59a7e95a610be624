"""The archfamily model zoo: importing it registers every trained network with timm.

    import archfamily.zoo, timm
    model = timm.create_model("archfamily_wrn16_2_copycat_250k", pretrained=True)

`manifest.json` beside this file lists the entries and their measured figures;
the weights are `weights/<name>.safetensors`. `archfamily zoo add` adds entries
and `archfamily zoo eval` re-measures them. Importing the zoo also registers the
generic entrypoints (`archfamily_wrn`, `archfamily_densenet_bc`, `archfamily_resnet`, and `archfamily_timm` for
a member of any timm CNN's family), which `timm.create_model("local-dir:DIR")` needs for `archfamily export` folders,
and has timm read such a folder through archfamily's checks first (`hub.local_dir`).

Floor 7 (`archfamily.zoo`): may import the helpers up to `hub`; not `bench`, `study` or the CLI.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

from timm.models import generate_default_cfgs, register_model
from torch import nn

import archfamily.anycnn.family  # noqa: F401  (registers the timm family)
from archfamily.hub.local_dir import read_exports_first
from archfamily.hub.timm_models import cifar_cfg, create_model_for, expect_sha256, pool_size, spec_from_model_args, timm_name
from archfamily.zoo.manifest import read_manifest

ZOO_DIR = Path(__file__).parent


def _cfgs(entries: list[dict[str, Any]], folder: Path) -> dict:
    """timm cfgs of the entries; their weights' recorded sha256 is checked whenever they are loaded."""
    expect_sha256({folder / e["file"]: e["sha256"] for e in entries})
    return generate_default_cfgs({
        f"{e['name']}.{e['tag']}": cifar_cfg(e["architecture"], file=str((folder / e["file"]).resolve()),
                                             num_classes=e["model_args"]["num_classes"],
                                             pool_size=pool_size(spec_from_model_args(e["architecture"], e["model_args"])))
        for e in entries
    })


_ENTRIES = read_manifest(ZOO_DIR)
default_cfgs = _cfgs(_ENTRIES, ZOO_DIR)  # above the entrypoints, as in timm's model files


def _entrypoint(entry: dict[str, Any]) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_model_for(entry["architecture"], entry["name"], pretrained, **{**entry["model_args"], **kwargs})

    entrypoint.__name__ = entrypoint.__qualname__ = entry["name"]
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = (f"{entry['name']}: {entry['params']:,} params, CIFAR-10 test error "
                          f"{entry['test_error']:.2f}% ({entry['source']})")
    return entrypoint


def _register(entries: list[dict[str, Any]]) -> list[str]:
    for entry in entries:
        register_model(_entrypoint(entry))
    return [e["name"] for e in entries]


def register_zoo(folder: Path) -> list[str]:
    """Register the entries of another zoo folder (this package's is registered on import); returns their names.

    Registering a folder again replaces its entries with what its manifest holds now, without timm's warning.
    """
    entries = read_manifest(folder)
    default_cfgs.update(_cfgs(entries, folder))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Overwriting .* in registry")
        return _register(entries)


_register(_ENTRIES)
timm_name("timm")  # `archfamily_timm`: what an exported member of a timm base's family names
read_exports_first()

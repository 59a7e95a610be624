"""The zoo's `manifest.json`: every trained network in the zoo, with its measured figures.

The zoo is the `zoo/` package of this repository (or the folder in
`$ARCHFAMILY_ZOO`): `manifest.json` plus `weights/<name>.safetensors`. Entry
names carry the `archfamily_` prefix, so no timm model is ever overwritten.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

from archfamily.checks import Fields, read_json
from archfamily.errors import UserError
from archfamily.files import atomic_write_json
from archfamily.specs import family_names, spec_from_dict

MANIFEST_FORMAT = "archfamily.zoo"
MANIFEST_VERSION = 1
PREFIX = "archfamily_"
TAG = "c10"  # timm's pretrained tag for weights trained on CIFAR-10
NAME = re.compile(r"archfamily_[a-z0-9_]+")


def zoo_dir() -> Path:
    """`$ARCHFAMILY_ZOO`, else this package's folder (`archfamily.zoo`)."""
    if os.environ.get("ARCHFAMILY_ZOO"):
        return Path(os.environ["ARCHFAMILY_ZOO"])
    return Path(__file__).parent


def read_manifest(folder: Optional[Path] = None) -> list[dict[str, Any]]:
    path = (folder or zoo_dir()) / "manifest.json"
    if not path.is_file():
        return []
    doc = Fields(read_json(path), str(path), ("entries",))
    if doc.data.get("format") != MANIFEST_FORMAT or doc.data.get("version") != MANIFEST_VERSION:
        raise UserError(f"{path} is not a version {MANIFEST_VERSION} archfamily zoo manifest")
    entries = doc.list("entries")
    names: set[str] = set()
    for i, raw in enumerate(entries):
        entry = Fields(raw, f"{path}: entries[{i}]", ENTRY_KEYS)
        _check_entry(entry)
        if entry.data["name"] in names:  # timm would register one of them, and remove would drop both
            entry.fail("name", f"{entry.data['name']} is listed twice")
        names.add(entry.data["name"])
    return entries


ENTRY_KEYS = ("name", "tag", "architecture", "model_args", "file", "params", "macs", "test_error", "test_images",
              "sha256", "source")


def _check_entry(entry: Fields) -> None:
    """What `import archfamily.zoo` registers and `zoo eval` measures: names timm takes, a file inside the zoo, real figures."""
    name = entry.str("name")
    if not NAME.fullmatch(name):
        entry.fail("name", f"must be archfamily_ followed by lowercase letters, digits and underscores, got {name!r:.40}")
    entry.str("tag")
    family = entry.str("architecture", family_names())
    spec = spec_from_dict({**entry.obj("model_args").data, "family": family}, f"{entry.where}: model_args")
    if entry.str("file") != f"weights/{name}.safetensors":
        entry.fail("file", f"must be weights/{name}.safetensors")
    if (entry.int("params", 1), entry.int("macs", 1)) != (spec.num_params(), spec.num_macs()):
        entry.fail("params", "and macs are not those of the network its model_args describe")
    entry.number("test_error", 0, 100)
    entry.int("test_images", 1)
    if not re.fullmatch(r"[0-9a-f]{64}", entry.str("sha256")):
        entry.fail("sha256", "must be 64 lowercase hexadecimal digits")
    entry.obj("source")


def write_manifest(entries: list[dict[str, Any]], folder: Optional[Path] = None) -> None:
    atomic_write_json((folder or zoo_dir()) / "manifest.json",
                      {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "entries": entries})


def entry_named(name: str, folder: Optional[Path] = None) -> dict[str, Any]:
    entries = read_manifest(folder)
    for entry in entries:
        if name in (entry["name"], f"{entry['name']}.{entry['tag']}"):
            return entry
    known = ", ".join(e["name"] for e in entries) or "none yet"
    raise UserError(f"no zoo entry named {name!r} (the zoo holds: {known})")


def normalise_name(name: str) -> str:
    """`wrn16_2_quick` -> `archfamily_wrn16_2_quick`; a one-line error for names timm cannot take."""
    full = name if name.startswith(PREFIX) else PREFIX + name
    if not NAME.fullmatch(full):
        raise UserError(f"zoo names use lowercase letters, digits and underscores only, got {name!r}")
    return full

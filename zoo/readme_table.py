"""Write the zoo table of docs/zoo.md from `zoo/manifest.json`: each entry beside the published network nearest its size.

The table lies between `<!-- zoo table -->` and `<!-- /zoo table -->` in docs/zoo.md; run this after `zoo add` or
`zoo remove` (`python zoo/readme_table.py`) so the table only ever shows figures the manifest holds, which
`zoo add` measured. The published networks: chenyaofo/pytorch-cifar-models' ResNet-20/32/56 (92.60%, 93.53%,
94.37% top-1 on CIFAR-10); the nearest is taken by the ratio of parameter counts.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from archfamily.files import atomic_write_text
from archfamily.zoo.manifest import read_manifest

ZOO_DIR = Path(__file__).resolve().parent
README = ZOO_DIR.parent / "docs" / "zoo.md"  # the zoo table lives in docs/zoo.md
PUBLISHED = (("ResNet-20", 0.27e6, 7.40), ("ResNet-32", 0.46e6, 6.47), ("ResNet-56", 0.86e6, 5.63))
MARKERS = re.compile(r"(<!-- zoo table -->\n).*?(<!-- /zoo table -->)", re.S)


def table() -> str:
    rows = ["| entry | params | MACs | test error | published network nearest in size | its error | gap |",
            "|---|---:|---:|---:|---|---:|---:|"]
    for entry in sorted(read_manifest(ZOO_DIR), key=lambda e: (e["params"], e["name"])):
        name, params, error = min(PUBLISHED, key=lambda p: abs(math.log(entry["params"] / p[1])))
        rows.append(f"| `{entry['name']}` | {entry['params']:,} | {entry['macs'] / 1e6:.1f}M | "
                    f"{entry['test_error']:.2f}% | {name} ({params / 1e6:.2f}M) | {error:.1f}% | "
                    f"+{entry['test_error'] - error:.1f} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    text = README.read_text()
    if not MARKERS.search(text):
        raise SystemExit(f"{README} has no <!-- zoo table --> ... <!-- /zoo table --> markers")
    atomic_write_text(README, MARKERS.sub(lambda m: m.group(1) + table() + m.group(2), text))
    print(f"wrote the zoo table of {README}")


if __name__ == "__main__":
    main()

"""The timm sweep's results as a page and a JSON of the same (docs/timm-compatibility.md and .json), and what
changed since the previous sweep's JSON (after a timm upgrade: a module that now fails, one that now passes).

A record is `check.NetworkCheck.to_dict()` with the module's name; the JSON holds them with the versions and the
date they were measured at, so the next sweep can say what moved.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from archfamily.compat.check import STAGES

MARKS = {True: "✓", False: "✗", None: "skipped"}


def passes(record: dict[str, Any]) -> bool:
    """Every stage ran and passed, or was skipped for a stated reason (a package not installed)."""
    stages = record["stages"]
    return all(s in stages and stages[s]["ok"] is not False for s in STAGES)


def failure(record: dict[str, Any]) -> Optional[tuple[str, str]]:
    """(stage, reason) where `record` stopped, or None."""
    return next(((s, r["detail"]) for s, r in record["stages"].items() if r["ok"] is False), None)


def is_cnn(record: dict[str, Any]) -> bool:
    """Whether the model is a CNN (its refusal as one is the only thing that makes it not)."""
    cnn = record["stages"].get("cnn")
    return cnn is None or cnn["ok"] is not False


def key(record: dict[str, Any]) -> str:
    """A record's row: its module's (the module's smallest CNN), or a named variant's own."""
    return record["model"] if record.get("variant") else record["module"]


def summary(records: list[dict[str, Any]]) -> str:
    cnns = [r for r in records if is_cnn(r) and not r.get("variant")]
    return f"{sum(passes(r) for r in cnns)} of {len(cnns)} CNN modules pass every stage"


def _cell(record: dict[str, Any], stage: str) -> str:
    result = record["stages"].get(stage)
    return "–" if result is None else MARKS[result["ok"]]


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(sweep: dict[str, Any]) -> str:
    """The page: how it was made, the counts, one row per CNN module (each stage ✓, ✗ or – not reached, the
    reason of a failure, the seconds it took), and the modules refused as no CNN apart."""
    records = sweep["records"]
    cnns = [r for r in records if is_cnn(r)]  # a module's smallest CNN, then any named variant of it
    stages = [s for s in STAGES if s != "cnn"]
    lines = [
        "# timm compatibility",
        "",
        "Measured by `python benchmarks/timm_sweep.py` (each row: `archfamily check timm:MODEL`), not claimed: for",
        "each architecture module of the installed timm, its smallest CNN (by parameters) goes through every stage",
        "of an archfamily run. Stages: trace the channel groups at a small input (32 px, or the least of 64, 96...",
        "the network runs at);",
        "rebuild at half and one and a half times every width and run; count params and MACs exactly; three",
        "Fisher prunes and the pruned network for real; export and `local-dir:` load with the same logits; ONNX",
        "Runtime with the same logits; `features_only`; and trace, rebuild and count again at timm's default input",
        "size (native). ✓ passed, ✗ failed (the reason is in the last column), – not reached.",
        "",
        f"timm {sweep['timm']}, Torch-Pruning {sweep['torch_pruning']}, torch {sweep['torch']}; {sweep['date']}.",
        "",
        f"**{summary(records)}**; {len(records) - len(cnns)} are not CNNs (listed below).",
        "",
        "| module | model | groups | " + " | ".join(stages) + " | seconds | reason |",
        "|---|---|---:|" + "---|" * len(stages) + "---:|---|",
    ]
    for r in sorted(cnns, key=lambda r: (r["module"], bool(r.get("variant")), r["model"])):
        failed = failure(r)
        why = f"{failed[0]}: {_escape(failed[1])}" if failed else ""
        seconds = sum(s["seconds"] for s in r["stages"].values())
        lines.append(f"| {r['module']} | {r['model']} | {r['groups'] if r['groups'] is not None else '–'} | "
                     + " | ".join(_cell(r, s) for s in stages) + f" | {seconds:.0f} | {why} |")
    lines += ["", "## Not CNNs", "", "archfamily prunes CNNs; these modules' smallest models attend across positions "
              "or turn the image into patch tokens, and `archfamily check` refuses them in one line.", "",
              "| module | model | why |", "|---|---|---|"]
    for r in sorted((r for r in records if not is_cnn(r)), key=lambda r: r["module"]):
        lines.append(f"| {r['module']} | {r['model']} | {_escape(r['stages']['cnn']['detail'])} |")
    return "\n".join(lines) + "\n"


def _state(record: dict[str, Any]) -> str:
    if not is_cnn(record):
        return "not a CNN"
    failed = failure(record)
    return f"✗ {failed[0]} ({failed[1][:100]})" if failed else "✓"


def changes(previous: Optional[dict[str, Any]], sweep: dict[str, Any]) -> list[str]:
    """One line per module whose model or outcome differs from the previous sweep's, or that is new or gone."""
    if previous is None:
        return []
    old = {key(r): r for r in previous.get("records", [])}
    new = {key(r): r for r in sweep["records"]}
    lines = []
    if (previous.get("timm"), previous.get("torch_pruning")) != (sweep["timm"], sweep["torch_pruning"]):
        lines.append(f"timm {previous.get('timm')} -> {sweep['timm']}, Torch-Pruning {previous.get('torch_pruning')}"
                     f" -> {sweep['torch_pruning']}")
    for module in sorted(old.keys() | new.keys()):
        if module not in new:
            lines.append(f"{module}: gone (was {_state(old[module])})")
        elif module not in old:
            lines.append(f"{module}: new, {new[module]['model']}: {_state(new[module])}")
        elif (old[module]["model"], _state(old[module])) != (new[module]["model"], _state(new[module])):
            lines.append(f"{module}: {old[module]['model']} {_state(old[module])} -> "
                         f"{new[module]['model']} {_state(new[module])}")
    return lines


def write(sweep: dict[str, Any], page: Path, data: Path) -> list[str]:
    """Write the page and the JSON; the changes since the JSON that was there."""
    previous = json.loads(data.read_text()) if data.exists() else None
    found = changes(previous, sweep)
    data.write_text(json.dumps(sweep, indent=1, ensure_ascii=False) + "\n")
    page.write_text(markdown(sweep))
    return found

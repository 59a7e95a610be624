"""Every architecture module of the installed timm through `archfamily check`: which CNNs archfamily handles.

    nice -n 19 python benchmarks/timm_sweep.py                      # the whole sweep: docs/timm-compatibility.*
    python benchmarks/timm_sweep.py --modules ghostnet res2net      # those again, the other rows kept
    python benchmarks/timm_sweep.py --models resnet50 ghostnet_100   # named variants as well

For each module (`timm.list_modules()`) its smallest CNN by parameters (every model built on the meta device,
nothing allocated; a module with none is listed with its smallest model's refusal; the previous JSON's choice
where it was made with the same timm) is checked in a process of
its own (`archfamily check timm:NAME --json`, one thread, `--timeout` seconds; a check that runs over fails at
the stage it was in). Writes docs/timm-compatibility.md and .json and prints what changed since the JSON that was
there (after a timm upgrade: which modules moved). Not a test: the suite keeps a cross-section
(tests/test_timm_compat.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any, Optional

import timm
import torch

from archfamily.anycnn.kinds import not_a_cnn
from archfamily.compat.check import STAGES, module_of
from archfamily.compat.report import key, summary, write

DOCS = Path(__file__).resolve().parent.parent / "docs"


def smallest_cnn(module: str) -> Optional[str]:
    """The module's CNN with the fewest parameters; else its smallest model (the check refuses it as no CNN)."""
    sized = []
    for name in timm.list_models(module=module):
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = timm.create_model(name, num_classes=10)
        except Exception:  # a model timm cannot build on the meta device: not a candidate
            continue
        sized.append((not_a_cnn(model) is not None, sum(p.numel() for p in model.parameters()), name))
    return min(sized)[2] if sized else None


def run_check(model: str, module: str, timeout: int) -> dict[str, Any]:
    """`archfamily check timm:MODEL --json` in a process of its own; its record (the stages it finished, and a
    failure at the next where it ran over `timeout` or died)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "archfamily", "check", f"timm:{model}", "--json"]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        out, err, ended = done.stdout, done.stderr, f"the check ended with exit code {done.returncode}"
    except subprocess.TimeoutExpired as exc:
        out, err = (exc.stdout or b"").decode(), ""
        ended = f"the check took more than {timeout} s"
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    whole = [line for line in lines if "stages" in line]
    if whole:
        return {**whole[-1], "module": module}
    stages = {line["stage"]: {k: line[k] for k in ("ok", "seconds", "detail")} for line in lines if "stage" in line}
    stuck = next(s for s in STAGES if s not in stages)
    last = err.strip().splitlines()[-1][:200] if err.strip() else ""
    stages[stuck] = {"ok": False, "seconds": round(time.perf_counter() - start - sum(s["seconds"] for s in stages.values()), 2),
                     "detail": f"{ended}{': ' + last if last else ''}"}
    return {"model": model, "module": module, "input_size": None, "native_input_size": None, "groups": None,
            "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="*", help="only these timm modules (the JSON's other rows are kept)")
    parser.add_argument("--models", nargs="*", default=[], help="named variants to check as well")
    parser.add_argument("--timeout", type=int, default=900, help="seconds one network's check may take")
    parser.add_argument("--jobs", type=int, default=2, help="checks run at once")
    parser.add_argument("--out", type=Path, default=DOCS / "timm-compatibility", help="page and JSON, less .md/.json")
    args = parser.parse_args()
    start = time.perf_counter()
    page, data = args.out.with_suffix(".md"), args.out.with_suffix(".json")
    previous = json.loads(data.read_text()) if data.exists() else {"records": []}
    modules = args.modules or timm.list_modules()
    unknown = sorted(set(modules) - set(timm.list_modules()))
    if unknown:
        sys.exit(f"timm {timm.__version__} has no module {', '.join(unknown)}")
    known = {r["module"]: r["model"] for r in previous["records"] if not r.get("variant")} \
        if previous.get("timm") == timm.__version__ else {}  # the same timm: the same smallest models
    chosen = [(m, name, False) for m in modules for name in [known.get(m) or smallest_cnn(m)] if name]
    chosen += [(module_of(name), name, True) for name in args.models]
    print(f"{len(chosen)} networks chosen in {time.perf_counter() - start:.0f} s", flush=True)

    def one(choice: tuple[str, str, bool]) -> dict[str, Any]:
        module, name, variant = choice
        record = {**run_check(name, module, args.timeout), "variant": variant}
        failed = next((f"{s}: {r['detail']}" for s, r in record["stages"].items() if r["ok"] is False), "every stage")
        print(f"{module:<20} {name:<28} {sum(r['seconds'] for r in record['stages'].values()):6.0f} s  {failed}",
              flush=True)
        return record

    with ThreadPoolExecutor(args.jobs) as pool:
        records = list(pool.map(one, chosen))
    checked = {key(r) for r in records}
    kept = [r for r in previous["records"] if args.modules and key(r) not in checked]
    sweep = {"timm": timm.__version__, "torch_pruning": version("torch-pruning"), "torch": torch.__version__,
             "date": datetime.date.today().isoformat(), "records": kept + records}
    for line in write(sweep, page, data) or ["no change since the previous sweep"]:
        print(line)
    print(f"{summary(sweep['records'])}; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

"""Does the one pruning engine (channel-group masks, `archfamily.pruning.run.PruneRun`) make the same Fisher pruning
choices as the gated engine it replaced (hand-written gates, `Pruner`), choice for choice, on archfamily's own
families?

Each engine runs in its own process, on the code that has it: `record gated` on the last commit with the gated
engine, `record masks` on the one engine. Both see the same network (the same seeded initialisation, or the zoo's
trained WRN-16-2), the same batches of the vendored CIFAR-10 (2,560 training images, a seeded stream of random
crops and flips, normalised by the data's statistics), the same SGD, and close one channel every PRUNE_EVERY steps.
While their choices agree their networks stay the same tensor for tensor (a mask of 0/1 before a ReLU computes
what a gate after it does, forward and backward), so `compare` counts the agreeing choices from the first prune
until the first that differs.

    git worktree add /tmp/gated <last commit with the gated engine>
    (cd /tmp/gated && PYTHONPATH=/tmp/gated python /path/to/run.py record gated > gated.json)
    python studies/experiments/engine-crosscheck/run.py record masks > masks.json
    python studies/experiments/engine-crosscheck/run.py compare gated.json masks.json > results.txt
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

PRUNES, BATCH, IMAGES = 40, 32, 2560
NETWORKS = {"wrn-16-2": 10, "densenet-bc-40-12": 5, "resnet-18": 5}  # base -> training steps between prunes
ZOO_WRN = "archfamily_wrn16_2_fast_e10.safetensors"  # the zoo's trained WRN-16-2 (10 epochs of `fast`)


def _network(name: str, engine: str) -> torch.nn.Module:
    """The network to prune: the zoo's trained WRN-16-2, else the family's seeded initialisation."""
    from archfamily.models import build_model
    from archfamily.specs import base_spec

    gated = {"gated": True} if engine == "gated" else {}
    torch.manual_seed(0)
    model = build_model(base_spec(name), **gated)
    if name == "wrn-16-2":
        from archfamily.models.checkpoint import load_model

        _, trained, _ = load_model(Path(__file__).resolve().parents[3] / "zoo" / "weights" / ZOO_WRN, **gated)
        model.load_state_dict(trained.state_dict())
    return model


def _pruner(engine: str, model: torch.nn.Module):
    """A function that closes the next channel and returns it as (prunable width index, channel)."""
    if engine == "gated":
        from archfamily.pruning.pruner import Pruner  # the gated engine, on the commit that has it

        pruner = Pruner(model, "fisher")
        return lambda: tuple(pruner.prune(1)[0])
    from archfamily.pruning.run import PruneRun

    run = PruneRun(model.spec, model, "fisher")
    return lambda: tuple(run.prune()["closed"][0])


def record(engine: str) -> None:
    from archfamily.data.batches import normalize, random_crop_flip
    from archfamily.data.dataset import load_data

    torch.set_num_threads(1)
    data = load_data(None, IMAGES, 100)
    out = {"engine": engine, "torch": torch.__version__, "networks": {}}
    for name, prune_every in NETWORKS.items():
        model = _network(name, engine).train()
        close = _pruner(engine, model)
        optimizer = torch.optim.SGD(model.parameters(), lr=8e-4, momentum=0.9, weight_decay=5e-4)
        gen = torch.Generator().manual_seed(0)
        choices, start = [], time.time()
        for _ in range(PRUNES):
            for _ in range(prune_every):
                idx = torch.randint(0, data.train_x.shape[0], (BATCH,), generator=gen)
                x = normalize(random_crop_flip(data.train_x[idx], gen), data.mean, data.std)
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), data.train_y[idx]).backward()
                optimizer.step()
            choices.append(close())
            print(f"{engine} {name}: prune {len(choices)} closes {choices[-1]}", file=sys.stderr, flush=True)
        out["networks"][name] = {"prune_every": prune_every, "choices": choices, "seconds": round(time.time() - start)}
    json.dump(out, sys.stdout)


def compare(gated_file: str, masks_file: str) -> int:
    gated, masks = json.loads(Path(gated_file).read_text()), json.loads(Path(masks_file).read_text())
    print(f"gated engine (torch {gated['torch']}) against the one engine (torch {masks['torch']}); fisher, one "
          f"channel per prune, batch {BATCH}, {IMAGES} CIFAR-10 training images")
    agree_all = True
    for name, run in gated["networks"].items():
        ours = masks["networks"][name]["choices"]
        same = next((i for i, (a, b) in enumerate(zip(run["choices"], ours)) if list(a) != list(b)), len(ours))
        agree_all &= same == PRUNES
        print(f"{name} (prune every {run['prune_every']} steps): {same} of {PRUNES} choices the same"
              + ("" if same == PRUNES else f"; prune {same + 1}: gated {run['choices'][same]}, masks {ours[same]}"))
        for i, (a, b) in enumerate(zip(run["choices"], ours)):
            print(f"  prune {i + 1:2d}: gated closes group {a[0]:2d} channel {a[1]:3d}; masks: group {b[0]:2d} channel "
                  f"{b[1]:3d} {'same' if list(a) == list(b) else 'DIFFERENT'}")
    return 0 if agree_all else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["record"]:
        record(sys.argv[2])
    else:
        sys.exit(compare(sys.argv[2], sys.argv[3]))

"""Issue 24, item 6: does the dependency-graph engine (archfamily/anycnn, groups traced by Torch-Pruning) make the
same Fisher pruning choices as archfamily's own WRN engine (hand-written gates), choice for choice?

Both engines sit on one network and see the same training steps: the zoo's trained WRN-16-2 (10 epochs of
`fast`), its built-in gates after each block's inner activation, and the anycnn masks on the inner groups
(`inner`: not tied to a residual stream, the `--groups inner` policy; in WRN-16-2 that also takes the
stem's group, which the built-in engine leaves alone, so only the built-in engine's six groups are compared) at the norms' outputs. It fine-tunes on the vendored
CIFAR-10 (SGD, lr 8e-4, batch 128, random crops and flips), and every PRUNE_EVERY steps each engine names the
channel it would close; the built-in engine's choice is applied to both, so they keep seeing the same network.

    python studies/engine-crosscheck/run.py > studies/engine-crosscheck/results.txt
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

from archfamily.anycnn.groups import Place, trace_groups
from archfamily.anycnn.masks import GroupMasks
from archfamily.data.batches import normalize, random_crop_flip
from archfamily.models.checkpoint import load_model
from archfamily.data.dataset import load_data
from archfamily.pruning.pruner import Pruner

PRUNES, PRUNE_EVERY, BATCH = 40, 10, 128
BASE = Path(__file__).resolve().parents[2] / "zoo" / "weights" / "archfamily_wrn16_2_fast_e10.safetensors"


def main() -> int:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    spec, model, _ = load_model(BASE, gated=True)
    model.train()
    pruner = Pruner(model, "fisher")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = trace_groups(model, "wrn-16-2", 32)
    names = {id(m): n for n, m in model.named_modules()}
    mapping = []  # built-in group -> anycnn group, by the conv that makes its channels
    for pg in pruner.groups:
        place = Place(names[id(pg.producer)], "out", pg.gate.mask.numel(), 0)
        mapping.append(next(i for i, g in enumerate(groups) if place in g.places))
    inner = [i for i, g in enumerate(groups) if g.inner]
    print(f"built-in groups {len(pruner.groups)}; traced groups {len(groups)}, inner {len(inner)}: "
          f"{', '.join(groups[i].name for i in inner)}; the built-in groups are these but "
          f"{', '.join(groups[i].name for i in inner if i not in mapping) or 'none'}")
    masks = GroupMasks(model, groups, mapping)
    data = load_data()
    opt = torch.optim.SGD(model.parameters(), lr=8e-4, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    same, worst, start = 0, 0.0, time.time()
    for prune in range(PRUNES):
        for _ in range(PRUNE_EVERY):
            idx = torch.randint(0, data.train_x.shape[0], (BATCH,), generator=gen)
            x = normalize(random_crop_flip(data.train_x[idx], gen), data.mean, data.std)
            loss = torch.nn.functional.cross_entropy(model(x), data.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        built_in = pruner.fisher.saliency()
        traced = masks.saliency()
        for b, i in enumerate(mapping):
            open_ = pruner.groups[b].gate.mask > 0
            if open_.any():
                scale = float(built_in[b][open_].abs().max())
                worst = max(worst, float((built_in[b] - traced[i])[open_].abs().max()) / max(scale, 1e-30))
        flat = [(float(traced[i][c]), b, c) for b, i in enumerate(mapping)
                for c in torch.nonzero(pruner.groups[b].gate.mask > 0).flatten().tolist()]
        graph_choice = min(flat)[1:]
        (choice,) = pruner.prune(1)
        masks.close([(mapping[choice[0]], choice[1])])
        masks.reset()
        same += graph_choice == choice
        print(f"prune {prune + 1:2d}: built-in closes group {choice[0]} channel {choice[1]:3d}; "
              f"graph engine: group {graph_choice[0]} channel {graph_choice[1]:3d} "
              f"{'same' if graph_choice == choice else 'DIFFERENT'}", flush=True)
    print(f"{same} of {PRUNES} choices the same; largest saliency difference over open channels "
          f"{worst:.2e} of the group's largest; {time.time() - start:.0f} s, {torch.get_num_threads()} thread, "
          f"torch {torch.__version__}")
    return 0 if same == PRUNES else 1


if __name__ == "__main__":
    sys.exit(main())

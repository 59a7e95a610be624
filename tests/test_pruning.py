"""Fisher saliency, the baselines, and physical compression."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from archfamily.errors import UserError
from archfamily.models import build_model
from archfamily.pruning.criteria import CRITERIA, Criterion, cost_weighted, register
from archfamily.pruning.pruner import Pruner, check_method
from archfamily.pruning.compress import compress, pruned_spec
from archfamily.pruning.costs import channel_costs, conv_output_areas
from archfamily.specs import base_spec


def _randomise_norm_stats(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)


def test_fisher_equals_brute_force_per_sample_autograd() -> None:
    torch.manual_seed(0)
    model = build_model(base_spec("wrn-10-1"), gated=True).double()
    _randomise_norm_stats(model)
    model.eval()  # BN on running stats, so samples are independent as the formula assumes
    x, y = torch.randn(6, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (6,))
    brute_model = copy.deepcopy(model)

    pruner = Pruner(model, "fisher")
    for group in pruner.groups:
        group.gate.train()  # the accumulator only listens while its gates train
    F.cross_entropy(model(x), y).backward()
    fisher = pruner.fisher.saliency()

    gates = [g.gate for g in brute_model.prune_groups()]
    for gate in gates:
        gate.mask.requires_grad_(True)
    n = x.shape[0]
    per_sample = []
    for i in range(n):
        loss = F.cross_entropy(brute_model(x[i:i + 1]), y[i:i + 1]) / n  # sample i's share of the batch mean
        per_sample.append(torch.autograd.grad(loss, [g.mask for g in gates]))
    for gi, delta in enumerate(fisher):
        expected = sum(grads[gi] ** 2 for grads in per_sample) / (2 * n)
        torch.testing.assert_close(delta, expected, rtol=1e-9, atol=1e-15)


def test_fisher_accumulates_between_prunes_and_resets() -> None:
    torch.manual_seed(0)
    model = build_model(base_spec("wrn-10-1"), gated=True)
    pruner = Pruner(model, "fisher")
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    for _ in range(2):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
    assert pruner.fisher.samples == 8 and all(s.sum() > 0 for s in pruner.fisher.sums)
    pruner.prune(3)
    assert pruner.fisher.samples == 0 and all(s.sum() == 0 for s in pruner.fisher.sums)


def _prune_randomly(model: torch.nn.Module, k: int, seed: int = 0) -> None:
    pruner = Pruner(model, "random", seed=seed)
    pruner.prune(k)


@pytest.mark.parametrize("name", ["wrn-16-2", "densenet-bc-40", "resnet-18", "resnet-50"])
def test_masked_and_compressed_outputs_are_equal(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(base_spec(name), gated=True)
    _randomise_norm_stats(model)
    total = sum(model.spec.prunable_widths())
    _prune_randomly(model, total // 2)
    model.prune_groups()[1].gate.mask.zero_()  # one group entirely closed
    model.eval()
    spec, small = compress(model)
    small.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-4)
    assert spec == pruned_spec(model)
    assert spec.num_params() == sum(p.numel() for p in small.parameters())
    rebuilt = build_model(spec)
    rebuilt.load_state_dict(small.state_dict())  # the spec alone rebuilds the compressed network


def test_fully_pruned_wrn_block_is_its_shortcut() -> None:
    model = build_model(base_spec("wrn-16-2"), gated=True)
    _randomise_norm_stats(model)
    model.eval()
    block = model.stages[0][1]  # identity shortcut
    first = model.stages[1][0]  # projection shortcut
    block.gate.mask.zero_()
    first.gate.mask.zero_()
    x, x1 = torch.randn(2, 32, 8, 8), torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)
        torch.testing.assert_close(first(x1), first.shortcut(F.relu(first.norm1(x1))))
    spec, small = compress(model)
    assert spec.inner_widths[0][1] == 0 and spec.inner_widths[1][0] == 0
    emptied = small.stages[0][1]
    assert not emptied.has_branch and not hasattr(emptied, "conv1") and not hasattr(emptied, "norm1")
    assert not small.stages[1][0].has_branch and small.stages[1][0].shortcut is not None


def test_fully_pruned_resnet_block_is_its_shortcut() -> None:
    model = build_model(base_spec("resnet-18"), gated=True)
    _randomise_norm_stats(model)
    model.eval()
    block = model.stages[1][1]
    block.gate.mask.zero_()
    x = torch.relu(torch.randn(2, 128, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)
    spec, small = compress(model)
    assert spec.mid_widths[1][1] == 0 and not small.stages[1][1].has_branch


def test_half_pruned_bottleneck_drops_its_whole_branch() -> None:
    model = build_model(base_spec("resnet-50"), gated=True)
    model.stages[0][1].gate2.mask.zero_()
    spec, _ = compress(model)
    assert spec.mid_widths[0][1] == 0 and spec.mid2_widths[0][1] == 0


def test_l1_ranks_by_absolute_weights() -> None:
    model = build_model(base_spec("wrn-10-1"), gated=True)
    conv = model.prune_groups()[0].producer
    with torch.no_grad():
        conv.weight.fill_(0.1)
        conv.weight[3].zero_()
        conv.weight[3, 0, 0, 0] = 5.0  # large filters whose signed sum is zero must not look small
        conv.weight[3, 0, 0, 1] = -5.0
        conv.weight[5].fill_(0.01)
    pruner = Pruner(model, "l1")
    assert pruner.prune(1) == [(0, 5)]


def test_prune_closes_k_channels_globally_and_never_twice() -> None:
    model = build_model(base_spec("wrn-10-1"), gated=True)
    pruner = Pruner(model, "random", seed=3)
    total = pruner.open_channels()
    closed = pruner.prune(7) + pruner.prune(7)
    assert len(set(closed)) == 14 and pruner.open_channels() == total - 14
    assert len({index for index, _ in closed}) > 1  # chosen across layers


def test_random_pruning_is_reproducible() -> None:
    picks = []
    for _ in range(2):
        pruner = Pruner(build_model(base_spec("wrn-10-1"), gated=True), "random", seed=11)
        picks.append(pruner.prune(5) + pruner.prune(5))
    assert picks[0] == picks[1]


@pytest.mark.parametrize("cost", ["params", "macs"])
def test_cost_aware_fisher_divides_by_channel_cost(cost: str) -> None:
    torch.manual_seed(0)
    model = build_model(base_spec("wrn-16-1"), gated=True)
    plain, aware = Pruner(model, "fisher"), Pruner(model, "fisher-cost", cost=cost)
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.randint(0, 10, (4,))).backward()
    costs = channel_costs(aware.groups, conv_output_areas(model, aware.groups, 32, 3), cost)
    for p, a, c in zip(plain.scores(), aware.scores(), costs):
        torch.testing.assert_close(a, p / c)
    conv1 = model.prune_groups()[0].producer  # 16 -> 16 then 16 -> 16, 3x3, at 32x32
    expected = 16 * 9 + 2 + 16 * 9 if cost == "params" else (16 * 9 + 16 * 9) * 32 * 32
    assert costs[0] == expected and conv1.out_channels == 16


def test_bottleneck_costs_follow_open_channels() -> None:
    model = build_model(base_spec("resnet-50"), gated=True)
    groups = model.prune_groups()
    before = channel_costs(groups, {}, "params")[0]
    groups[1].gate.mask[:10] = 0  # the 3x3 conv that consumes group 0 now has 10 fewer outputs
    assert before - channel_costs(groups, {}, "params")[0] == 10 * 9


PLAN = """
budgets = ["60k"]
[base]
spec = "wrn-16-1"
[prune.mine]
method = "METHOD"
[arms.reduced-width]
rule = "reduced-width"
"""


def test_a_registered_criterion_prunes_weighs_cost_and_is_planned(tmp_path) -> None:
    from archfamily.pruning.family_file import _cost_fields
    from archfamily.study.plan import load_plan

    def first_channels(pruner) -> list[torch.Tensor]:  # channel c of every group scores c: the first ones go first
        return [torch.arange(g.gate.mask.numel(), dtype=torch.float64) for g in pruner.groups]

    by_index = register(Criterion("by-index", first_channels))
    register(cost_weighted("by-index-cost", by_index, lambda pruner, scores, costs: [s + c for s, c in zip(scores, costs)]))
    model = build_model(base_spec("wrn-10-1"), gated=True)
    pruner = Pruner(model, "by-index")
    assert pruner.accumulator is None and pruner.prune(3) == [(g.index, 0) for g in pruner.groups[:3]]
    aware = Pruner(model, "by-index-cost", cost="macs")
    costs = channel_costs(aware.groups, conv_output_areas(model, aware.groups, 32, 3), "macs")
    for s, base, c in zip(aware.scores(), first_channels(aware), costs):
        torch.testing.assert_close(s, base + c)
    check_method("by-index-cost", "latency")  # a cost-weighted method may weigh time
    with pytest.raises(UserError):  # a saliency alone weighs no cost
        check_method("by-index", "latency")
    assert _cost_fields({"method": "by-index-cost", "cost": "macs"}) == {"cost": "macs", "cost_on": None}

    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.replace('method = "METHOD"', 'method = "by-index-cost"\ncost = "params"'))
    run = load_plan(plan).prune_runs["mine"]
    assert (run.method, run.cost) == ("by-index-cost", "params")
    plan.write_text(PLAN.replace('method = "METHOD"', 'method = "by-index"\ncost = "params"'))
    with pytest.raises(UserError, match="'cost' applies to methods fisher-cost and fisher-penalty and by-index-cost"):
        load_plan(plan)
    del CRITERIA["by-index-cost"]
    plan.write_text(PLAN.replace("METHOD", "by-index-cost"))
    with pytest.raises(UserError, match="'method' must be one of fisher, fisher-cost, fisher-penalty, l1, random, "
                                        "by-index, got 'by-index-cost'"):
        load_plan(plan)

"""The one pruning engine on archfamily's own families: Fisher saliency, the baselines, costs, and compression."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from archfamily.errors import UserError
from archfamily.models import build_model
from archfamily.pruning.criteria import CRITERIA, Criterion, check_method, cost_weighted, register
from archfamily.pruning.run import PruneRun
from archfamily.specs import base_spec


def _randomise_norm_stats(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)


def _run(name: str, method: str = "fisher", **kwargs) -> PruneRun:
    model = build_model(base_spec(name))
    return PruneRun(model.spec, model, method, **kwargs)


def test_fisher_equals_brute_force_per_sample_autograd() -> None:
    """Delta_c = 1/(2N) sum_n (dLoss_n/dm_c)^2 for a mask m multiplying the group's channels, the derivative taken
    through an explicit mask after each group's norm (brute force, one sample at a time)."""
    torch.manual_seed(0)
    model = build_model(base_spec("wrn-10-1")).double()
    _randomise_norm_stats(model)
    brute_model = copy.deepcopy(model).eval()
    x, y = torch.randn(6, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (6,))
    run = PruneRun(model.spec, model, "fisher")
    model.eval()  # BN on running stats, so samples are independent as the formula assumes
    model.training = True  # ...while the masks listen, as they do only for a training network
    F.cross_entropy(model(x), y).backward()
    fisher = run.masks.saliency()

    masks = {i: torch.ones(g.width, dtype=torch.float64, requires_grad=True) for i, g in run.groups.items()}
    for i, group in run.groups.items():
        norm = brute_model.get_submodule(group.places[1].module)
        norm.register_forward_hook(lambda m, inp, out, i=i: out * masks[i].view(1, -1, 1, 1))
    n = x.shape[0]
    per_sample = [torch.autograd.grad(F.cross_entropy(brute_model(x[s:s + 1]), y[s:s + 1]) / n, list(masks.values()))
                  for s in range(n)]
    for k, i in enumerate(masks):
        expected = sum(grads[k] ** 2 for grads in per_sample) / (2 * n)
        torch.testing.assert_close(fisher[i], expected, rtol=1e-9, atol=1e-15)


def test_fisher_accumulates_between_prunes_and_resets() -> None:
    torch.manual_seed(0)
    run = _run("wrn-10-1")
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    for _ in range(2):
        run.model.zero_grad()
        F.cross_entropy(run.model(x), y).backward()
    run.masks.saliency()
    assert run.masks.samples == 8 and all(s.sum() > 0 for s in run.masks.sums.values())
    run.channels_per_prune = 3
    run.prune()
    assert run.masks.samples == 0 and all(s.sum() == 0 for s in run.masks.sums.values())


@pytest.mark.parametrize("name", ["wrn-16-2", "densenet-bc-40", "resnet-18", "resnet-50"])
def test_masked_and_compressed_outputs_are_equal(name: str) -> None:
    """Half the channels closed at random and one group closed entirely: the compressed member computes what the
    masked network does, has the member's parameter count, and its spec alone rebuilds it."""
    torch.manual_seed(0)
    run = _run(name, "random", channels_per_prune=sum(base_spec(name).prunable_widths()) // 2)
    _randomise_norm_stats(run.model)
    run.prune()
    first = run.prunable[1]
    run.masks.close([(first, c) for c in range(run.groups[first].width)])
    run.model.eval()
    member = run.member()
    small = run.compressed()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), run.model(x), atol=1e-5, rtol=1e-4)
    assert member.prunable_widths()[first] == 0 and small.spec == member
    assert member.num_params() == sum(p.numel() for p in small.parameters())
    build_model(member).load_state_dict(small.state_dict())  # the spec alone rebuilds the compressed network


def test_fully_pruned_wrn_block_is_its_shortcut() -> None:
    run = _run("wrn-16-2")
    _randomise_norm_stats(run.model)
    run.model.eval()
    block, first = run.model.stages[0][1], run.model.stages[1][0]  # identity shortcut; projection shortcut
    for i in (1, 2):  # their groups, in block order
        run.masks.close([(i, c) for c in range(run.groups[i].width)])
    x, x1 = torch.randn(2, 32, 8, 8), torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)
        torch.testing.assert_close(first(x1), first.shortcut(F.relu(first.norm1(x1))))
    small = run.compressed()
    assert small.spec.inner_widths[0][1] == 0 and small.spec.inner_widths[1][0] == 0
    emptied = small.stages[0][1]
    assert not emptied.has_branch and not hasattr(emptied, "conv1") and not hasattr(emptied, "norm1")
    assert not small.stages[1][0].has_branch and small.stages[1][0].shortcut is not None


def test_fully_pruned_resnet_block_is_its_shortcut() -> None:
    """A post-activation branch ends in a norm whose bias would survive its channels; a closed group zeroes it."""
    run = _run("resnet-18")
    _randomise_norm_stats(run.model)
    run.model.eval()
    block = run.model.stages[1][1]
    run.masks.close([(3, c) for c in range(run.groups[3].width)])
    x = torch.relu(torch.randn(2, 128, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)
    assert run.member().mid_widths[1][1] == 0 and not run.compressed().stages[1][1].has_branch


def test_half_pruned_bottleneck_drops_its_whole_branch() -> None:
    run = _run("resnet-50")
    run.masks.close([(3, c) for c in range(run.groups[3].width)])  # block 0.1's second group
    member = run.member()
    assert member.mid_widths[0][1] == 0 and member.mid2_widths[0][1] == 0


def test_l1_ranks_by_absolute_weights() -> None:
    run = _run("wrn-10-1", "l1")
    conv = run.model.get_submodule(run.groups[0].name)
    with torch.no_grad():
        conv.weight.fill_(0.1)
        conv.weight[3].zero_()
        conv.weight[3, 0, 0, 0] = 5.0  # large filters whose signed sum is zero must not look small
        conv.weight[3, 0, 0, 1] = -5.0
        conv.weight[5].fill_(0.01)
    assert run.prune()["closed"] == [[0, 5]]


def test_prune_closes_k_channels_globally_and_never_twice() -> None:
    run = _run("wrn-10-1", "random", seed=3, channels_per_prune=7)
    total = run.open_channels()
    closed = run.prune()["closed"] + run.prune()["closed"]
    assert len({tuple(c) for c in closed}) == 14 and run.open_channels() == total - 14
    assert len({index for index, _ in closed}) > 1  # chosen across layers


def test_random_pruning_is_reproducible() -> None:
    picks = []
    for _ in range(2):
        run = _run("wrn-10-1", "random", seed=11, channels_per_prune=5)
        picks.append(run.prune()["closed"] + run.prune()["closed"])
    assert picks[0] == picks[1]


@pytest.mark.parametrize("cost", ["params", "macs"])
def test_cost_aware_fisher_divides_by_channel_cost(cost: str) -> None:
    """A channel's cost is the member's count less the member's with one channel fewer there: a WRN-16-1 block's
    inner channel is its conv1 filter, two norm values and its conv2 slice (their MACs at 32x32)."""
    torch.manual_seed(0)
    model = build_model(base_spec("wrn-16-1"))
    plain, aware = PruneRun(model.spec, model, "fisher"), PruneRun(model.spec, model, "fisher-cost", cost=cost)
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.randint(0, 10, (4,))).backward()
    costs = aware.channel_costs()
    scores, weighed = plain.scores(), aware.scores()
    for i in aware.prunable:
        torch.testing.assert_close(weighed[i], scores[i] / costs[i])
    expected = 16 * 9 + 2 + 16 * 9 if cost == "params" else (16 * 9 + 16 * 9) * 32 * 32
    assert costs[0] == expected


def test_bottleneck_costs_follow_open_channels() -> None:
    run = _run("resnet-50", "fisher-cost")
    before = run.channel_costs()[0]
    run.masks.close([(1, c) for c in range(10)])  # the 3x3 conv that reads group 0 now has 10 fewer outputs
    assert before - run.channel_costs()[0] == 10 * 9


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
    """A plug-in criterion is one scores function over the run's groups and one `register`: it prunes any base
    (here a WRN and a timm CNN), a cost-weighted wrapper weighs it, and a study plan takes it."""
    from archfamily.anycnn.spec import TimmSpec
    from archfamily.pruning.family_file import _cost_fields
    from archfamily.study.plan import load_plan

    def first_channels(run) -> dict[int, torch.Tensor]:  # channel c of every group scores c: the first ones go first
        return {i: torch.arange(run.groups[i].width, dtype=torch.float64) for i in run.prunable}

    by_index = register(Criterion("by-index", first_channels))
    register(cost_weighted("by-index-cost", by_index, lambda run, scores, costs: {i: s + costs[i] for i, s in scores.items()}))
    try:
        run = _run("wrn-10-1", "by-index", channels_per_prune=3)
        assert run.prune()["closed"] == [[i, 0] for i in run.prunable[:3]]
        aware = _run("wrn-10-1", "by-index-cost", cost="macs")
        costs = aware.channel_costs()
        for i, s in aware.scores().items():
            torch.testing.assert_close(s, first_channels(aware)[i] + costs[i])
        timm_base = TimmSpec.of_base("test_resnet")
        timm_run = PruneRun(timm_base, timm_base.build(), "by-index", channels_per_prune=2)
        assert timm_run.prune()["closed"] == [[i, 0] for i in timm_run.prunable[:2]]
        check_method("by-index-cost", "latency")  # a cost-weighted method may weigh time
        with pytest.raises(UserError):  # a saliency alone weighs no cost
            check_method("by-index", "latency")
        assert _cost_fields({"method": "by-index-cost", "cost": "macs"}) == {"cost": "macs", "cost_on": None}

        plan = tmp_path / "plan.toml"
        plan.write_text(PLAN.replace('method = "METHOD"', 'method = "by-index-cost"\ncost = "params"'))
        planned = load_plan(plan).prune_runs["mine"]
        assert (planned.method, planned.cost) == ("by-index-cost", "params")
        plan.write_text(PLAN.replace('method = "METHOD"', 'method = "by-index"\ncost = "params"'))
        with pytest.raises(UserError, match="'cost' applies to methods fisher-cost and fisher-penalty and by-index-cost"):
            load_plan(plan)
        del CRITERIA["by-index-cost"]
        plan.write_text(PLAN.replace("METHOD", "by-index-cost"))
        with pytest.raises(UserError, match="'method' must be one of fisher, fisher-cost, fisher-penalty, l1, random, "
                                            "by-index, got 'by-index-cost'"):
            load_plan(plan)
    finally:
        for name in ("by-index", "by-index-cost"):
            if name in CRITERIA:
                del CRITERIA[name]


def test_a_run_checkpointed_with_gates_is_refused_in_one_line(tmp_path) -> None:
    """A prune checkpoint written by the gated engine an earlier archfamily had holds gate tensors; resuming it is
    one line saying so, not a traceback or a silent restart."""
    from archfamily.weights import check_tensors

    model = build_model(base_spec("wrn-10-1"))
    tensors = {**model.state_dict(), "stages.0.0.gate.mask": torch.ones(16)}
    with pytest.raises(UserError, match="holds channel gates, written while pruning by an archfamily before its one"):
        check_tensors("state-000010.safetensors", tensors, model.state_dict())

"""Any timm CNN: its channel groups traced by Torch-Pruning, the network rebuilt at other widths, counted exactly.

The rebuild is checked against a second, independent path: Torch-Pruning's own pruning of the base to the same
widths must give the same tensors, shape for shape.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from archfamily.anycnn.spec import TimmSpec, channel_groups
from archfamily.errors import UserError

NETWORKS = ["resnet18", "resnet50", "mobilenetv2_050", "mobilenetv3_small_050", "efficientnet_b0", "regnetx_002",
            "convnext_atto", "densenet121"]


def _pruned_by_torch_pruning(name: str, widths: tuple[int, ...]) -> torch.nn.Module:
    """timm's base pruned by Torch-Pruning itself to `widths` (the first channels of each group removed)."""
    import timm
    import torch_pruning as tp

    model = timm.create_model(name, num_classes=10).eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 32, 32))
    layers = dict(model.named_modules())
    for group, width in zip(channel_groups(name), widths):
        root = layers[group.name]
        prune = tp.prune_conv_out_channels if isinstance(root, torch.nn.Conv2d) else tp.prune_linear_out_channels
        graph.get_pruning_group(root, prune, idxs=list(range(group.width - width))).prune()
    return model


@pytest.mark.parametrize("name", NETWORKS)
def test_a_timm_cnn_rebuilds_at_smaller_and_larger_widths(name: str) -> None:
    base = TimmSpec.of_base(name)
    timm_params = sum(p.numel() for p in TimmSpec(name, base.widths).build().parameters())
    assert base.num_params() == timm_params  # at its own widths the rebuild is timm's network
    smaller = base.scaled(1.0, [w / 2 for w in base.widths])  # whole groups where a grouped convolution is
    larger = base.scaled(1.0, [w * 1.5 for w in base.widths])
    assert smaller.num_params() < base.num_params() < larger.num_params()
    assert smaller.num_macs() < base.num_macs() < larger.num_macs()
    with torch.no_grad():
        logits = smaller.build().eval()(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and bool(torch.isfinite(logits).all())
    if name != "regnetx_002":  # Torch-Pruning's own pruning fails on its grouped convolutions
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruned = _pruned_by_torch_pruning(name, smaller.widths)
        rebuilt = smaller.build()
        assert {k: v.shape for k, v in pruned.state_dict().items()} == \
               {k: v.shape for k, v in rebuilt.state_dict().items()}


def test_an_unknown_timm_model_is_one_line() -> None:
    with pytest.raises(UserError, match="timm has no model 'no_such_model'"):
        TimmSpec.of_base("no_such_model")


@pytest.mark.parametrize("name, groups, inner", [("resnet18", 12, 8), ("mobilenetv2_050", 25, 20),
                                                 ("densenet121", 120, 120)])
def test_residual_streams_are_told_from_inner_groups(name: str, groups: int, inner: int) -> None:
    """resnet18: the four stage streams are residual, each block's inner width is not; MobileNetV2: the
    depthwise convolution passes its group through; DenseNet concatenates, adding nothing."""
    traced = channel_groups(name)
    assert len(traced) == groups and sum(g.inner for g in traced) == inner


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2_050", "densenet121"])
def test_masked_channels_are_the_removed_network(name: str) -> None:
    """Closing channels by their masks gives the logits of the network with those channels removed (Torch-Pruning
    removes them, weights and all), and that network is the one the spec at the narrower widths builds."""
    import timm

    from archfamily.anycnn.compress import remove_channels
    from archfamily.pruning.masks import GroupMasks

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).eval()
    for module in model.modules():  # running statistics that are not the identity, so a wrong mask shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    groups = channel_groups(name)
    masks = GroupMasks(model, dict(enumerate(groups)), range(len(groups)))
    generator = torch.Generator().manual_seed(1)
    closed = [(i, int(c)) for i in range(0, len(groups), 3)
              for c in torch.randperm(groups[i].width, generator=generator)[:max(1, groups[i].width // 4)]]
    masks.close(closed)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        masked_logits = model(x)
        by_mask = masks.closed_channels()
        masks.remove()
        smaller = remove_channels(model, groups, by_mask, 32)
        torch.testing.assert_close(smaller(x), masked_logits, rtol=1e-4, atol=1e-4)
    widths = tuple(g.width - len(by_mask.get(i, [])) for i, g in enumerate(groups))
    rebuilt = TimmSpec(name, widths).build()
    rebuilt.load_state_dict(smaller.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), masked_logits, rtol=1e-4, atol=1e-4)


def test_fisher_saliency_of_a_group_is_its_masks_gradient_squared() -> None:
    """Delta_c = 1/(2N) sum_n (dLoss_n/dm_c)^2 over every place of the group, checked against autograd on a
    mask variable itself, one sample at a time."""
    import timm

    from archfamily.pruning.masks import GroupMasks

    torch.manual_seed(0)
    model = timm.create_model("mobilenetv2_050", num_classes=10).train()
    groups = channel_groups("mobilenetv2_050")
    masks = GroupMasks(model, dict(enumerate(groups)), range(len(groups)))
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([1, 2, 3])
    for module in model.modules():  # per-sample gradients must not depend on the batch: freeze norms
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    saliency = masks.saliency()
    i = next(i for i, g in enumerate(groups) if len(g.places) > 3)  # a group with several mask places
    expected = torch.zeros(groups[i].width, dtype=torch.float64)
    for n in range(3):
        masks.masks[i] = torch.ones(groups[i].width, requires_grad=True)
        loss = torch.nn.functional.cross_entropy(model(x[n:n + 1]), y[n:n + 1], reduction="sum")
        (grad,) = torch.autograd.grad(loss, masks.masks[i])
        expected += grad.double() ** 2
    torch.testing.assert_close(saliency[i], expected / 6, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("family_base", ["wrn-16-1", "resnet-18", "resnet-50", "densenet-bc-40"])
def test_a_family_s_listed_groups_are_what_torch_pruning_traces(family_base: str) -> None:
    """archfamily's own networks list their channel groups (`channel_groups()`), so pruning them needs no trace;
    Torch-Pruning's trace of the same network finds each of them, place for place, and calls it inner
    (studies/experiments/engine-crosscheck/ prunes WRN-16-2, DenseNet-BC and ResNet-18 40 times with the engine
    before it and with this one)."""
    from archfamily.anycnn.groups import trace_groups
    from archfamily.models import build_model
    from archfamily.specs import base_spec

    model = build_model(base_spec(family_base))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = {g.name: g for g in trace_groups(model, family_base, 32)}
    listed = model.channel_groups()
    assert listed and all(g.closable for g in listed.values())
    for group in listed.values():
        assert set(traced[group.name].places) == set(group.places) and traced[group.name].inner


def test_lowest_open_never_closes_a_groups_last_channel() -> None:
    from types import SimpleNamespace

    from archfamily.pruning.run import lowest_open

    masks = SimpleNamespace(masks={0: torch.tensor([1.0, 0.0, 1.0]), 1: torch.tensor([1.0, 1.0])})
    scores = {0: torch.tensor([0.1, 0.0, 0.2]), 1: torch.tensor([0.5, 0.3])}
    # channel 1 of group 0 is closed already; group 0 may lose one more; then group 1's lower channel
    assert lowest_open(scores, masks, {0: 1, 1: 1}, 3) == [(0, 0), (1, 1)]
    # a closable group (a residual branch of archfamily's own families) may lose its last channel
    assert lowest_open(scores, masks, {0: 0, 1: 1}, 3) == [(0, 0), (0, 2), (1, 1)]


@pytest.mark.parametrize("name,policy", [("resnet18", "all"), ("mobilenetv3_small_050", "inner")])
def test_a_fisher_pruning_run_records_members_that_are_the_pruned_network(name: str, policy: str) -> None:
    """Every prune closes the lowest-Fisher open channels of the groups the policy allows; the recorded widths,
    parameter count and MACs are those of the network with the closed channels removed, whose logits are the
    masked network's."""
    from archfamily.anycnn.compress import remove_channels
    from archfamily.pruning.run import PruneRun, run_pruning
    from archfamily.models.counting import count_params

    torch.manual_seed(0)
    spec = TimmSpec.of_base(name)
    model = spec.build()
    run = PruneRun(spec, model, "fisher", policy, channels_per_prune=2)
    assert run.prunable and all(spec.groups[i].inner for i in run.prunable) == (policy == "inner")
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train_step() -> None:
        x, y = torch.randn(8, 3, 32, 32, generator=generator), torch.randint(0, 10, (8,), generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    seen = []
    original_prune = run.prune

    def checked_prune():
        scores = run.scores()
        flat = [(float(scores[i][c]), i, c) for i in run.prunable
                for c in torch.nonzero(run.masks.masks[i] > 0).flatten().tolist()]
        point = original_prune()
        assert point["closed"] == [[i, c] for _, i, c in sorted(flat)[:2]]
        seen.append(point)
        return point

    run.prune = checked_prune
    points = run_pruning(run, train_step, prune_every=2, prunes=3)
    assert points == seen and [p["prune_step"] for p in points] == [1, 2, 3]
    assert [sum(p["widths"]) for p in points] == [sum(spec.widths) - 2 * k for k in (1, 2, 3)]
    assert points[0]["params"] > points[-1]["params"] and points[-1]["macs"] < spec.num_macs()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        masked_logits = model.eval()(x)
        closed = run.masks.closed_channels()
        run.masks.remove()
        smaller = remove_channels(model, spec.groups, closed, 32)
        torch.testing.assert_close(smaller(x), masked_logits, rtol=1e-4, atol=1e-4)
    assert count_params(smaller) == points[-1]["params"]
    assert tuple(points[-1]["widths"]) == tuple(g.width - len(closed.get(i, [])) for i, g in enumerate(spec.groups))


@pytest.mark.parametrize("rule", ["copycat", "fitted", "reduced-width"])
def test_a_timm_family_scales_below_and_above_its_base_within_one_percent(rule: str) -> None:
    """A pruning run's trajectory over resnet18's groups feeds the scaling rules unchanged: each solves a budget
    below and one above the base to within 1% of its parameters, and the member builds and runs."""
    from archfamily.pruning.run import PruneRun
    from archfamily.scaling.rules import fit_rules, make_rule, solve

    torch.manual_seed(0)
    spec = TimmSpec.of_base("resnet18")
    run = PruneRun(spec, spec.build(), "l1", "all", channels_per_prune=64)
    first = {"prune_step": 0, "widths": list(spec.widths), "block_ratios": [1.0] * len(spec.widths),
             "params": spec.num_params(), "macs": spec.num_macs()}
    trajectory = [first] + [run.prune() for _ in range(40)]
    assert trajectory[-1]["params"] < 0.5 * first["params"]
    scaling = make_rule(rule, spec, trajectory, fit_rules(spec, trajectory))
    for budget in (int(0.3 * first["params"]), int(1.5 * first["params"])):
        result = solve(scaling, budget)
        assert result.within_tolerance, result.note
        member = result.member.spec
        assert isinstance(member, TimmSpec) and abs(member.num_params() - budget) <= 0.01 * budget
    assert member.build().eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_the_bottleneck_rule_keeps_a_timm_base_s_residual_streams() -> None:
    """bottleneck over a timm base's groups is the paper's: the inner widths times Z, every group tied to a
    residual addition kept at the base's width (as a WRN's outer widths are), below and above the base."""
    from archfamily.scaling.rules import make_rule, solve

    spec = TimmSpec.of_base("resnet18")
    streams = [i for i, keep in enumerate(spec.residual_widths()) if keep]
    assert streams and len(streams) < len(spec.widths)
    scaling = make_rule("bottleneck", spec, [], {})
    for budget in (int(0.6 * spec.num_params()), int(1.3 * spec.num_params())):
        result = solve(scaling, budget)
        assert result.within_tolerance, result.note
        member = result.member.spec
        assert [member.widths[i] for i in streams] == [spec.widths[i] for i in streams]
        assert member.widths != spec.widths


def _counted_by_pytorch(spec: TimmSpec) -> tuple[int, int]:
    """(params, MACs) of the network rebuilt on the meta device and counted by `torch.utils.flop_counter`."""
    from torch.utils.flop_counter import FlopCounterMode

    model = spec.build("meta").eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, spec.in_chans, spec.input_size, spec.input_size, device="meta"))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


@pytest.mark.parametrize("name", ["mobilenetv2_050", "convnext_atto", "densenet121", "regnetx_002"])
def test_the_count_table_counts_what_pytorch_counts(name: str) -> None:
    """A member's params and MACs come from its base's count table, without building it; PyTorch's count of the
    whole rebuilt network says the same (depthwise and grouped convolutions, norms, layer scales, concatenations,
    linear layers applied at every position), at widths other than the base's, and so does a channel's cost (the
    member's counts less those of the member with one channel fewer in that group)."""
    from dataclasses import replace

    from archfamily.pruning.costs import count_costs

    base = TimmSpec.of_base(name)
    member = base.scaled(1.0, [w * 3 / 4 for w in base.widths])
    assert (member.num_params(), member.num_macs()) == _counted_by_pytorch(member)
    chosen = [i for i in range(len(base.groups)) if base.groups[i].step == 1][::7][:3]
    for cost, which in (("params", 0), ("macs", 1)):
        costs = count_costs(member, chosen, cost, least=1)
        for i in chosen:
            fewer = replace(member, widths=tuple(w - (j == i) for j, w in enumerate(member.widths)))
            assert costs[i] == _counted_by_pytorch(member)[which] - _counted_by_pytorch(fewer)[which] > 0, \
                (cost, base.groups[i].name)


def test_a_base_s_count_table_is_kept_and_a_damaged_one_measured_again(tmp_path, monkeypatch) -> None:
    """The table is measured once per base and read back from the cache by a later process (here: the same
    process with its memory cleared); a damaged file is measured again, not trusted."""
    from archfamily.anycnn import spec as spec_module

    monkeypatch.setenv("ARCHFAMILY_CACHE", str(tmp_path))
    spec_module.base_table.cache_clear()
    first = spec_module.base_table("resnet18")
    (path,) = (tmp_path / "timm-tables").glob("resnet18-*.json")
    spec_module.base_table.cache_clear()
    assert spec_module.base_table("resnet18") == first
    path.write_text(path.read_text().replace('"params"', '"parameters"', 1))
    spec_module.base_table.cache_clear()
    assert spec_module.base_table("resnet18") == first
    spec_module.base_table.cache_clear()

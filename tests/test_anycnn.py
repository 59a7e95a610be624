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
    smaller = TimmSpec(name, tuple(max(1, w // 2) for w in base.widths))
    larger = TimmSpec(name, tuple(w + w // 2 for w in base.widths))
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


def test_a_network_that_cannot_be_resized_is_one_line() -> None:
    base = TimmSpec.of_base("ghostnet_050")  # its ghost modules slice a concatenation: not a traced dependency
    with pytest.raises(UserError, match="ghostnet_050: the network does not run with its channel groups resized"):
        TimmSpec(base.base, tuple(max(1, w // 2) for w in base.widths)).num_params()


def test_an_unknown_timm_model_is_one_line() -> None:
    with pytest.raises(UserError, match="timm has no model 'no_such_model'"):
        TimmSpec.of_base("no_such_model")


@pytest.mark.parametrize("name, groups, inner", [("resnet18", 12, 8), ("mobilenetv2_050", 25, 20),
                                                 ("densenet121", 120, 120)])
def test_residual_streams_are_told_from_inner_groups(name: str, groups: int, inner: int) -> None:
    """resnet18: the four stage streams are residual, each block's inner width is not; MobileNetV2: the
    depthwise convolution passes its group through; DenseNet concatenates, adding nothing."""
    traced = channel_groups(name)
    assert len(traced) == groups and sum(not g.residual for g in traced) == inner

"""The two ways a derive run prunes, behind one interface (`PruneEngine`), chosen by the base's family.

- `GatedEngine`: archfamily's own families, whose networks carry a gate per prunable channel (`models.gates`)
  and list their groups (`prune_groups()`); every method in `criteria`, cost-aware ones included.
- the dependency-graph engine (`anycnn.prune.GraphPruneRun`): any timm CNN, one mask per channel group traced by
  Torch-Pruning; fisher, l1, random, and fisher-cost and fisher-penalty against a channel's params or MACs
  (`anycnn.costs`; not latency yet), over every group or only the inner ones (`--groups`).

The derive loop sees only this: build the network to fine-tune, attach to the trainer's copy of it, close the
next channels, say what network is left (and how many channels may still close), keep and restore what a
checkpoint needs beyond the model's tensors, and give the pruned network for real (compressed).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Protocol

from torch import nn

from archfamily.anycnn.costs import COSTS
from archfamily.anycnn.prune import METHODS, POLICIES, GraphPruneRun, prunable_groups
from archfamily.errors import SettingError, UserError
from archfamily.models import build_model
from archfamily.pruning.compress import compress, pruned_spec
from archfamily.pruning.pruner import Pruner
from archfamily.specs import ArchSpec, family_type

if TYPE_CHECKING:
    from archfamily.latency.model import LatencyModel



class PruneEngine(Protocol):
    num_prunes: int
    beta: Optional[float]

    def prune(self) -> None: ...

    def member(self) -> ArchSpec: ...

    def open_channels(self) -> int: ...

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: Optional[dict[str, Any]]) -> None: ...

    def compressed(self) -> nn.Module: ...

    def close(self) -> None: ...


def uses_graph(spec: ArchSpec) -> bool:
    """Whether `spec`'s network is pruned by channel-group masks (a timm base's) rather than gates."""
    return family_type(spec.family).graph_pruned


def check_engine_settings(spec: ArchSpec, method: str, groups: Optional[str], cost: str = "params") -> None:
    """One-line errors for a method, a cost or a `--groups` policy the base's engine does not have."""
    if not uses_graph(spec):
        if groups not in (None, "inner"):
            raise SettingError("{groups} {got} is for a timm base; archfamily's own families prune their inner "
                               "groups", got=groups)
        return
    if method not in METHODS:
        raise SettingError("{method} {got} is not available for a timm base; choose from {known}", got=method,
                           known=", ".join(METHODS))
    if cost not in COSTS:
        raise SettingError("{cost} {got} is not available for a timm base; choose from {known}", got=cost,
                           known=", ".join(COSTS))
    if groups not in (None, *POLICIES):
        raise SettingError("{groups} must be one of {known}", known=", ".join(POLICIES))


def smallest_member(spec: ArchSpec, groups: Optional[str]) -> ArchSpec:
    """The smallest network pruning can reach: every prunable width closed (a timm base's groups keep one)."""
    if not uses_graph(spec):
        return spec.with_prunable_widths([0] * len(spec.prunable_widths()))
    chosen = set(prunable_groups(spec.groups, groups or "all"))
    return spec.with_prunable_widths([1 if i in chosen else w for i, w in enumerate(spec.prunable_widths())])


def network_to_prune(spec: ArchSpec, base_model: nn.Module, where: str) -> nn.Module:
    """A copy of the trained base, in the form its engine prunes (gated for the built-in families)."""
    model = spec.build() if uses_graph(spec) else build_model(spec, gated=True)
    missing, unexpected = model.load_state_dict(base_model.state_dict(), strict=False)
    differ = [*unexpected, *(k for k in missing if not k.endswith("gate.mask"))]
    if differ:
        raise UserError(f"{where}: its tensors are not those of the base this run prunes ({', '.join(differ[:3])})")
    return model


def masked_network(base: ArchSpec, pruned: ArchSpec) -> nn.Module:
    """The pruned network as a masking framework runs it: the base at full size, every channel `pruned` lost
    zeroed (gates for the built-in families, channel-group masks for a timm base), untrained (for timing)."""
    if uses_graph(base):
        from archfamily.anycnn.masks import GroupMasks

        model = base.build()
        shrunk = [i for i, (w, w0) in enumerate(zip(pruned.widths, base.widths)) if w < w0]
        if shrunk:  # the masks' hooks zero the closed channels at every forward
            model.masks = GroupMasks(model, base.groups, shrunk)
            model.masks.close([(i, c) for i in shrunk for c in range(pruned.widths[i], base.widths[i])])
        return model
    model = build_model(base, gated=True)
    for group in model.prune_groups():
        group.gate.mask[pruned.prunable_widths()[group.index]:] = 0
    return model


class GatedEngine:
    """The built-in families' engine: `Pruner` over the gates of the trainer's network."""

    def __init__(self, model: nn.Module, method: str, cost: str, seed: int, k: int,
                 latency: Optional["LatencyModel"] = None) -> None:
        self.model, self.k = model, k
        self.pruner = Pruner(model, method, cost, seed, latency)

    @property
    def num_prunes(self) -> int:
        return self.pruner.num_prunes

    @num_prunes.setter
    def num_prunes(self, value: int) -> None:
        self.pruner.num_prunes = value

    @property
    def beta(self) -> Optional[float]:
        return self.pruner.beta

    def prune(self) -> None:
        self.pruner.prune(self.k)

    def member(self) -> ArchSpec:
        return pruned_spec(self.model)

    def open_channels(self) -> int:
        return self.pruner.open_channels()

    def state(self) -> dict[str, Any]:
        return {}  # the gates' masks are buffers: the model's tensors keep them

    def restore(self, state: Optional[dict[str, Any]]) -> None:
        return None

    def compressed(self) -> nn.Module:
        return compress(self.model)[1]

    def close(self) -> None:
        self.pruner.remove_hooks()


def engine_for(spec: ArchSpec, model: nn.Module, method: str, cost: str, seed: int, k: int, groups: Optional[str],
               latency: Optional["LatencyModel"] = None) -> PruneEngine:
    """The engine that prunes `model` (the trainer's network of `spec`), closing `k` channels a prune."""
    if not uses_graph(spec):
        return GatedEngine(model, method, cost, seed, k, latency)
    return GraphPruneRun(spec, model, method, groups or "all", k, seed, cost)

"""A timm base's count table: its channel groups and every layer they occupy, which is all it takes to count any
member's parameters and MACs in plain Python (and so what one channel of a group costs, `pruning.costs`).

Tracing a base (Torch-Pruning) and counting a network (`torch.utils.flop_counter` on the meta device) take
seconds; a member differs from its base only in the layers its groups occupy, so its counts are the base's plus
what resizing those layers changes. With the table, a whole trajectory is checked in milliseconds and `scale`
answers without importing torch. The table is measured once per base (`network.measure_table`) and kept on disk
per timm and Torch-Pruning version (`spec.base_table`); `tests/test_anycnn.py` checks its counts against the
network rebuilt and counted by PyTorch.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from archfamily.errors import UserError
from archfamily.families import ChannelGroup, Place

POLICIES = ("all", "inner")  # which groups a pruning run may prune (`prunable_groups`)


@dataclass(frozen=True)
class Layer:
    """A layer some group occupies, as the base has it."""

    kind: str  # conv, depthwise, linear, norm or param
    out: int  # output channels (or features; a norm's or parameter's channels)
    inp: int  # input channels (or features); a norm's or parameter's: 0
    per_weight: int  # a conv's kernel area; a norm's or parameter's values per channel; a linear's 1
    group_width: int  # a grouped conv's input channels per group; otherwise 0
    bias: bool
    positions: int  # output positions per image (a conv's H*W; a linear's rows per image); a norm's: 0

    def params(self, out: int, inp: int) -> int:
        if self.kind in ("norm", "param"):
            return self.per_weight * out
        if self.kind == "depthwise":
            return out * self.per_weight + self.bias * out
        fan_in = self.group_width if self.group_width else inp
        return out * fan_in * self.per_weight + self.bias * out

    def macs(self, out: int, inp: int) -> int:
        """What `torch.utils.flop_counter` counts (halved): a conv's or linear's weights times its output
        positions; norms and parameters outside layers count nothing."""
        if self.kind in ("norm", "param"):
            return 0
        return (self.params(out, inp) - self.bias * out) * self.positions

    def change(self, d_out: int, d_in: int) -> tuple[int, int]:
        """The layer's change in outputs and inputs as the rebuild applies it: a depthwise convolution's two sides
        move together (Torch-Pruning records one), a norm's or parameter's channels are whichever side holds them."""
        if self.kind == "depthwise":
            return (d_out or d_in,) * 2
        if self.kind in ("norm", "param"):
            return (d_out + d_in,) * 2
        return d_out, d_in


def new_sizes(groups: Sequence[ChannelGroup], widths: Sequence[int]) -> dict[tuple[str, str], int]:
    """How much each (layer, dim) grows or shrinks: the sum over the groups in it of their change (a group's
    channels may appear several times per channel, e.g. after a flatten)."""
    if len(widths) != len(groups):
        raise UserError(f"expected {len(groups)} widths, one per channel group; got {len(widths)}")
    change: dict[tuple[str, str], int] = defaultdict(int)
    for group, width in zip(groups, widths):
        if width < 1:
            raise UserError(f"channel group {group.name}: width {width} must be at least 1")
        for place in group.places:
            # a place holds `count / group.width` of the layer's channels per channel of the group: several after
            # a flatten, a part where the layer makes one half of a concatenation (a ghost module's), whole by `step`
            change[(place.module, place.dim)] += (width - group.width) * place.count // group.width
    return {key: delta for key, delta in change.items() if delta}


def prunable_groups(groups: Sequence[ChannelGroup] | Mapping[int, ChannelGroup], policy: str) -> list[int]:
    """The indices of the groups (a sequence's positions, or a mapping's keys) `policy` lets the run prune."""
    if policy not in POLICIES:
        raise UserError(f"--groups must be one of {', '.join(POLICIES)}, got {policy!r}")
    indexed = groups.items() if isinstance(groups, Mapping) else enumerate(groups)
    # A group in a grouped convolution would have to lose channels evenly from each of its convolution groups to
    # be removed for real; that is not done yet, so those groups stay whole (RegNet's, ResNeXt's inner groups).
    chosen = [i for i, g in indexed if (policy == "all" or g.inner) and g.step == 1]
    if not chosen:
        raise UserError(f"the network has no {policy} channel groups to prune")
    return chosen


@dataclass(frozen=True)
class CountTable:
    """A base's groups, the layers they occupy, and its exact counts (params, MACs at its input size)."""

    groups: tuple[ChannelGroup, ...]
    layers: tuple[tuple[str, Layer], ...]
    params: int
    macs: int

    def counts(self, widths: Sequence[int]) -> tuple[int, int]:
        """(params, MACs) of the member at `widths`: the base's, changed as the rebuild changes each layer."""
        params, macs = self.params, self.macs
        for (name, layer), (out, inp) in zip(self.layers, self._sizes(widths)):
            params += layer.params(out, inp) - layer.params(layer.out, layer.inp)
            macs += layer.macs(out, inp) - layer.macs(layer.out, layer.inp)
        return params, macs

    def _sizes(self, widths: Sequence[int]) -> list[tuple[int, int]]:
        """Each occupied layer's (outputs, inputs) at `widths`, in `layers`' order."""
        change = new_sizes(self.groups, widths)
        sizes = []
        for name, layer in self.layers:
            d_out, d_in = layer.change(change.get((name, "out"), 0) + change.get((name, "param"), 0),
                                       change.get((name, "in"), 0))
            sizes.append((layer.out + d_out, layer.inp + d_in))
        return sizes

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "macs": self.macs,
                "groups": [{**asdict(g), "places": [asdict(p) for p in g.places]} for g in self.groups],
                "layers": [[name, asdict(layer)] for name, layer in self.layers]}

    @classmethod
    def from_dict(cls, data: Any) -> "CountTable":
        """The table `to_dict` wrote; raises ValueError (or KeyError, TypeError) on anything else, so a damaged
        cache file is measured again rather than trusted."""
        groups = tuple(ChannelGroup(**{**g, "places": tuple(Place(**p) for p in g["places"])}) for g in data["groups"])
        layers = tuple((str(name), Layer(**layer)) for name, layer in data["layers"])
        table = cls(groups, layers, data["params"], data["macs"])
        whole = [table.params, table.macs, *(g.width for g in groups), *(g.step for g in groups),
                 *(p.count for g in groups for p in g.places)]
        if not all(type(v) is int and v >= 1 for v in whole) or \
                not all(isinstance(g.name, str) and isinstance(g.branch, str) and type(g.inner) is bool
                        and type(g.closable) is bool for g in groups) or \
                not all(type(v) is int and v >= 0 for _, layer in layers
                        for v in (layer.out, layer.inp, layer.per_weight, layer.group_width, layer.positions)) or \
                {m for g in groups for m in {p.module for p in g.places}} != {name for name, _ in layers}:
            raise ValueError("not a count table")
        return table

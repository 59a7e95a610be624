"""Architecture specs: the single source of truth from which every network is built.

A spec is a small frozen dataclass per family. It fixes every width that pruning or
scaling can change, so a pruned network, a scaled family member and a base network
are all just specs, and specs are what the library passes around and looks networks
up by (they are hashable). Each spec walks its blocks once (`blocks()`): the model
constructor builds from that walk, and the exact parameter count and MACs are read
from it analytically, so budget searches never need to build a model; tests check
both against the built module (`sum(p.numel())`) and `torch.utils.flop_counter`.

JSON happens only at the edges: `spec_to_dict` / `spec_from_dict` for the files
archfamily writes, and timm's `model_args` in `archfamily.timm_models`.

Convention for MACs: multiply-accumulates of convolutions and linear layers only,
which is what `FlopCounterMode` counts (its FLOPs are 2x MACs). Norms, activations,
pooling and additions are not counted.
"""
from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields, replace
from typing import Any, ClassVar, Optional

from archfamily.checks import is_whole
from archfamily.errors import UserError
from archfamily.families import (FamilyType, Spec, all_families, family_names, family_type, load_lazy_families,  # noqa: F401
                                 register_family)
# (the registry's face: import these from here, where the built-in families are registered)


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k


def _conv_out(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def _round_width(width: float, round_to: int = 1) -> int:
    """Nearest multiple of `round_to`; any positive width keeps at least `round_to` channels, 0 stays 0."""
    if width <= 0:
        return 0
    return max(round_to, round_to * math.floor(width / round_to + 0.5))


@dataclass(frozen=True)
class BlockPlan:
    """One block as it is built: its input width, prunable inner widths, output width and stride.

    For DenseNet-BC a block is one dense layer and `cout` is the growth it appends.
    A block with any inner width 0 has no branch: pruning removed it whole.
    """

    cin: int
    inner: tuple[int, ...]
    cout: int
    stride: int = 1

    @property
    def has_branch(self) -> bool:
        return min(self.inner) > 0

    @property
    def projection(self) -> bool:
        """A residual block's shortcut is a 1x1 conv when width or resolution change."""
        return self.cin != self.cout or self.stride != 1


def _residual_blocks(stem_width: int, stage_widths: tuple[int, ...],
                     inner: list[list[tuple[int, ...]]]) -> tuple[tuple[BlockPlan, ...], ...]:
    """Stages of residual blocks: each stage's first block takes the previous width, and strides by 2 after stage 1."""
    cin, stages = stem_width, []
    for s, (cout, row) in enumerate(zip(stage_widths, inner)):
        stages.append(tuple(BlockPlan(cin if b == 0 else cout, widths, cout, 2 if s > 0 and b == 0 else 1)
                            for b, widths in enumerate(row)))
        cin = cout
    return tuple(stages)


def _check_io(spec: Any) -> None:
    if spec.num_classes < 0 or spec.in_chans < 1:
        raise UserError("num_classes must be >= 0 and in_chans >= 1")


def _check_rows(name: str, rows: tuple[tuple[int, ...], ...], stages: Optional[int] = None) -> None:
    """Width rows: one non-empty row per stage (`stages` of them, or any number from 1), no negative width."""
    if not rows or (stages is not None and len(rows) != stages) or any(len(row) == 0 for row in rows):
        expected = f"{stages} stages" if stages is not None else "at least one stage"
        raise UserError(f"{name} must hold one non-empty row of widths per stage ({expected}), got {len(rows)} rows")
    if any(w < 0 for row in rows for w in row):
        raise UserError(f"{name} must not hold negative widths")


def _resize_rows(rows: tuple[tuple[int, ...], ...], counts: list[int]) -> tuple[tuple[int, ...], ...]:
    """Each stage cut or extended (repeating its last block) to `counts[s]` blocks."""
    return tuple(tuple(row[min(b, len(row) - 1)] for b in range(n)) for row, n in zip(rows, counts))


class _OneWidthPerBlock:
    """Prunable-width bookkeeping for specs with one prunable width per block, kept as rows per stage.

    `_rows` names the dataclass field holding the rows (`inner_widths`, `bottleneck_widths`).
    """

    _rows: ClassVar[str]

    def _width_rows(self) -> tuple[tuple[int, ...], ...]:
        return getattr(self, self._rows)

    def prunable_widths(self) -> list[int]:
        return [w for row in self._width_rows() for w in row]

    def with_prunable_widths(self, widths: list[int]):
        it = iter(widths)
        return replace(self, **{self._rows: tuple(tuple(int(next(it)) for _ in row) for row in self._width_rows())})

    def prunable_stages(self) -> list[int]:
        """Stage index of each prunable width, in `prunable_widths` order."""
        return [s for s, row in enumerate(self._width_rows()) for _ in row]

    def block_counts(self) -> list[int]:
        return [len(row) for row in self._width_rows()]

    def with_block_counts(self, counts: list[int]):
        return replace(self, **{self._rows: _resize_rows(self._width_rows(), counts)})


@dataclass(frozen=True)
class WideResNetSpec(_OneWidthPerBlock):
    """CIFAR WideResNet (Zagoruyko & Komodakis), pre-activation basic blocks.

    `stage_widths` are the outer widths of the three stages (16k, 32k, 64k for
    WRN-d-k). `inner_widths[s][b]` is the width between block b's two 3x3 convs:
    the channels pruning removes. An inner width of 0 leaves only the shortcut.
    """

    family: ClassVar[str] = "wrn"
    _rows: ClassVar[str] = "inner_widths"
    stage_widths: tuple[int, ...]
    inner_widths: tuple[tuple[int, ...], ...]
    stem_width: int = 16
    num_classes: int = 10
    in_chans: int = 3
    input_size: int = 32  # the side of the images it takes (counts MACs; timm's cfg and exports read it)

    def __post_init__(self) -> None:
        _check_io(self)
        _check_rows("inner_widths", self.inner_widths, len(self.stage_widths))
        if min(self.stage_widths) < 1 or self.stem_width < 1:
            raise UserError("stage and stem widths must be at least 1")

    @classmethod
    def from_depth_width(cls, depth: int, k: float, num_classes: int = 10) -> "WideResNetSpec":
        if depth < 10 or (depth - 4) % 6 != 0:
            raise UserError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = tuple(max(1, round(base * k)) for base in (16, 32, 64))
        return cls(widths, tuple((w,) * n for w in widths), num_classes=num_classes)

    def scaled(self, outer: float, inner: list[float], round_to: int = 1) -> "WideResNetSpec":
        """Stage widths times `outer`, inner widths set to `inner`; the stem stays 16 as in WRN-d-k."""
        stages = tuple(_round_width(outer * w, round_to) for w in self.stage_widths)
        return replace(self, stage_widths=stages).with_prunable_widths([_round_width(w, round_to) for w in inner])

    def blocks(self) -> tuple[tuple[BlockPlan, ...], ...]:
        return _residual_blocks(self.stem_width, self.stage_widths, [[(w,) for w in row] for row in self.inner_widths])

    def num_params(self) -> int:
        total = _conv(self.in_chans, self.stem_width, 3)
        for block in (b for stage in self.blocks() for b in stage):
            cin, (mid,), out = block.cin, block.inner, block.cout
            if block.has_branch or block.projection:
                total += 2 * cin  # norm1 feeds the residual branch and the projection
            if block.has_branch:
                total += _conv(cin, mid, 3) + 2 * mid + _conv(mid, out, 3)
            if block.projection:
                total += _conv(cin, out, 1)
        return total + 2 * self.stage_widths[-1] + self.stage_widths[-1] * self.num_classes + self.num_classes

    def num_macs(self, input_size: Optional[int] = None) -> int:
        size = input_size or self.input_size
        total = size * size * _conv(self.in_chans, self.stem_width, 3)
        for block in (b for stage in self.blocks() for b in stage):
            size = _conv_out(size, 3, block.stride, 1)
            (mid,) = block.inner
            if block.has_branch:
                total += size * size * (_conv(block.cin, mid, 3) + _conv(mid, block.cout, 3))
            if block.projection:
                total += size * size * _conv(block.cin, block.cout, 1)
        return total + self.stage_widths[-1] * self.num_classes


@dataclass(frozen=True)
class DenseNetBCSpec(_OneWidthPerBlock):
    """CIFAR DenseNet-BC (Huang et al.): bottleneck layers and compressing transitions.

    `bottleneck_widths[s][l]` is the width between dense layer l's 1x1 and 3x3
    convs (4k by default): the channels pruning removes. A layer of width 0 adds
    `growth` channels of zeros, which is exactly what its masked twin computes.
    """

    family: ClassVar[str] = "densenet_bc"
    _rows: ClassVar[str] = "bottleneck_widths"
    growth: int
    bottleneck_widths: tuple[tuple[int, ...], ...]
    compression: float = 0.5
    stem_width: int = 0  # 0 means the paper's 2 * growth
    num_classes: int = 10
    in_chans: int = 3
    input_size: int = 32

    def __post_init__(self) -> None:
        _check_io(self)
        _check_rows("bottleneck_widths", self.bottleneck_widths)
        if self.growth < 1 or not 0 < self.compression <= 1 or self.stem_width < 0:
            raise UserError("growth must be at least 1, compression in (0, 1] and stem_width >= 0")

    @classmethod
    def from_depth_growth(cls, depth: int, growth: int = 12, num_classes: int = 10) -> "DenseNetBCSpec":
        if depth < 10 or (depth - 4) % 6 != 0:
            raise UserError(f"DenseNet-BC depth must be 6n+4 with n >= 1 (40, 100, 190, ...), got {depth}")
        n = (depth - 4) // 6
        return cls(growth, tuple((4 * growth,) * n for _ in range(3)), num_classes=num_classes)

    @property
    def stem_channels(self) -> int:
        return self.stem_width or 2 * self.growth

    def scaled(self, outer: float, inner: list[float], round_to: int = 1) -> "DenseNetBCSpec":
        """Growth (and so every transition and the stem) times `outer`; bottleneck widths set to `inner`."""
        stem = _round_width(outer * self.stem_width, round_to) if self.stem_width else 0
        return replace(self, growth=_round_width(outer * self.growth, round_to), stem_width=stem) \
            .with_prunable_widths([_round_width(w, round_to) for w in inner])

    def blocks(self) -> tuple[tuple[BlockPlan, ...], ...]:
        """Every dense layer; each stage after the first starts at the previous one's output, compressed."""
        cin, stages = self.stem_channels, []
        for s, row in enumerate(self.bottleneck_widths):
            if s > 0:
                cin = int(cin * self.compression)  # the transition before this stage
            stages.append(tuple(BlockPlan(cin + layer * self.growth, (mid,), self.growth) for layer, mid in enumerate(row)))
            cin += len(row) * self.growth
        return tuple(stages)

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Channels leaving each dense block (before its transition)."""
        return tuple(self.stage_out(stage) for stage in self.blocks())

    @staticmethod
    def stage_out(stage: tuple[BlockPlan, ...]) -> int:
        """Channels leaving a dense block: its last layer's input plus that layer's growth."""
        return stage[-1].cin + stage[-1].cout

    def num_params(self) -> int:
        total = _conv(self.in_chans, self.stem_channels, 3)
        stages = self.blocks()
        for s, stage in enumerate(stages):
            for layer in stage:
                (mid,) = layer.inner
                if layer.has_branch:
                    total += 2 * layer.cin + _conv(layer.cin, mid, 1) + 2 * mid + _conv(mid, self.growth, 3)
            if s + 1 < len(stages):
                total += 2 * self.stage_out(stage) + _conv(self.stage_out(stage), stages[s + 1][0].cin, 1)
        final = self.stage_out(stages[-1])
        return total + 2 * final + final * self.num_classes + self.num_classes

    def num_macs(self, input_size: Optional[int] = None) -> int:
        size = input_size or self.input_size
        total = size * size * _conv(self.in_chans, self.stem_channels, 3)
        stages = self.blocks()
        for s, stage in enumerate(stages):
            for layer in stage:
                (mid,) = layer.inner
                if layer.has_branch:
                    total += size * size * (_conv(layer.cin, mid, 1) + _conv(mid, self.growth, 3))
            if s + 1 < len(stages):
                total += size * size * _conv(self.stage_out(stage), stages[s + 1][0].cin, 1)
                size //= 2
        return total + self.stage_out(stages[-1]) * self.num_classes


RESNET_LAYERS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


@dataclass(frozen=True)
class ResNetSpec:
    """ResNet (He et al.) with basic or bottleneck blocks, post-activation as in torchvision.

    `mid_widths[s][b]` is the width after block b's first conv. Bottleneck blocks
    have a second inner width, after the 3x3 conv, in `mid2_widths`. A block with
    any inner width 0 keeps only its shortcut. The `imagenet` stem is a 7x7/2 conv
    and a max pool; the `cifar` stem a 3x3/1 conv, for 32x32 inputs.
    """

    family: ClassVar[str] = "resnet"
    block: str
    stage_widths: tuple[int, ...]
    mid_widths: tuple[tuple[int, ...], ...]
    mid2_widths: tuple[tuple[int, ...], ...] = ()
    stem: str = "cifar"
    stem_width: int = 64
    num_classes: int = 10
    in_chans: int = 3
    input_size: int = 0  # 0: the stem's own, `stem_input_size`

    def __post_init__(self) -> None:
        if self.input_size == 0:
            object.__setattr__(self, "input_size", self.stem_input_size)
        if self.block not in ("basic", "bottleneck"):
            raise UserError(f"ResNet block must be 'basic' or 'bottleneck', got {self.block!r}")
        if self.stem not in ("cifar", "imagenet"):
            raise UserError(f"ResNet stem must be 'cifar' or 'imagenet', got {self.stem!r}")
        if (self.block == "bottleneck") != bool(self.mid2_widths):
            raise UserError("mid2_widths is given exactly for bottleneck ResNets")
        _check_io(self)
        _check_rows("mid_widths", self.mid_widths, len(self.stage_widths))
        if min(self.stage_widths, default=0) < 1 or self.stem_width < 1:
            raise UserError("stage and stem widths must be at least 1")
        if self.mid2_widths:
            _check_rows("mid2_widths", self.mid2_widths, len(self.stage_widths))
            if [len(r) for r in self.mid2_widths] != [len(r) for r in self.mid_widths]:
                raise UserError("mid2_widths must have as many blocks per stage as mid_widths")

    @classmethod
    def from_depth(cls, depth: int, stem: str = "cifar", num_classes: int = 10) -> "ResNetSpec":
        if depth not in RESNET_LAYERS:
            raise UserError(f"ResNet depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
        block, layers = RESNET_LAYERS[depth]
        expansion = 4 if block == "bottleneck" else 1
        mids = tuple((64 * 2**s,) * n for s, n in enumerate(layers))
        outs = tuple(64 * 2**s * expansion for s in range(4))
        return cls(block, outs, mids, mids if block == "bottleneck" else (), stem, num_classes=num_classes)

    @property
    def stem_input_size(self) -> int:
        """The images its stem was designed for: 224 for the ImageNet stem, 32 for the CIFAR stem."""
        return 224 if self.stem == "imagenet" else 32

    def blocks(self) -> tuple[tuple[BlockPlan, ...], ...]:
        """Basic blocks have one inner width (mid,), bottlenecks two (mid, mid2)."""
        if self.block == "basic":
            inner = [[(m,) for m in row] for row in self.mid_widths]
        else:
            inner = [list(zip(row, row2)) for row, row2 in zip(self.mid_widths, self.mid2_widths)]
        return _residual_blocks(self.stem_width, self.stage_widths, inner)

    def prunable_widths(self) -> list[int]:
        return [w for stage in self.blocks() for block in stage for w in block.inner]

    def with_prunable_widths(self, widths: list[int]) -> "ResNetSpec":
        """Rebuild with new inner widths; a block with any width 0 loses its whole branch."""
        it = iter(widths)
        per = 2 if self.block == "bottleneck" else 1
        rows = [[tuple(int(next(it)) for _ in range(per)) for _ in row] for row in self.mid_widths]
        rows = [[ws if min(ws) > 0 else (0,) * per for ws in row] for row in rows]
        mids = tuple(tuple(ws[0] for ws in row) for row in rows)
        mids2 = tuple(tuple(ws[1] for ws in row) for row in rows) if per == 2 else ()
        return replace(self, mid_widths=mids, mid2_widths=mids2)

    def prunable_stages(self) -> list[int]:
        per = 2 if self.block == "bottleneck" else 1
        return [s for s, row in enumerate(self.mid_widths) for _ in row for _ in range(per)]

    def block_counts(self) -> list[int]:
        return [len(row) for row in self.mid_widths]

    def with_block_counts(self, counts: list[int]) -> "ResNetSpec":
        mids2 = _resize_rows(self.mid2_widths, counts) if self.mid2_widths else ()
        return replace(self, mid_widths=_resize_rows(self.mid_widths, counts), mid2_widths=mids2)

    def scaled(self, outer: float, inner: list[float], round_to: int = 1) -> "ResNetSpec":
        """Stem and stage widths times `outer`; inner widths set to `inner`."""
        stages = tuple(_round_width(outer * w, round_to) for w in self.stage_widths)
        return replace(self, stage_widths=stages, stem_width=_round_width(outer * self.stem_width, round_to)) \
            .with_prunable_widths([_round_width(w, round_to) for w in inner])

    def _block_params(self, block: BlockPlan) -> int:
        cin, out, ws = block.cin, block.cout, block.inner
        total = _conv(cin, out, 1) + 2 * out if block.projection else 0
        if not block.has_branch:
            return total
        if self.block == "basic":
            return total + _conv(cin, ws[0], 3) + 2 * ws[0] + _conv(ws[0], out, 3) + 2 * out
        mid, mid2 = ws
        return total + _conv(cin, mid, 1) + 2 * mid + _conv(mid, mid2, 3) + 2 * mid2 + _conv(mid2, out, 1) + 2 * out

    def num_params(self) -> int:
        total = _conv(self.in_chans, self.stem_width, 7 if self.stem == "imagenet" else 3) + 2 * self.stem_width
        total += sum(self._block_params(b) for stage in self.blocks() for b in stage)
        return total + self.stage_widths[-1] * self.num_classes + self.num_classes

    def num_macs(self, input_size: Optional[int] = None) -> int:
        size = input_size or self.input_size
        if self.stem == "imagenet":
            size = _conv_out(size, 7, 2, 3)
            total = size * size * _conv(self.in_chans, self.stem_width, 7)
            size = _conv_out(size, 3, 2, 1)
        else:
            total = size * size * _conv(self.in_chans, self.stem_width, 3)
        for block in (b for stage in self.blocks() for b in stage):
            cin, out, ws = block.cin, block.cout, block.inner
            out_size = _conv_out(size, 3, block.stride, 1)
            if block.projection:
                total += out_size * out_size * _conv(cin, out, 1)
            if block.has_branch and self.block == "basic":
                total += out_size * out_size * (_conv(cin, ws[0], 3) + _conv(ws[0], out, 3))
            elif block.has_branch:
                total += size * size * _conv(cin, ws[0], 1)
                total += out_size * out_size * (_conv(ws[0], ws[1], 3) + _conv(ws[1], out, 1))
            size = out_size
        return total + self.stage_widths[-1] * self.num_classes


ArchSpec = Spec  # the spec of any registered family (`archfamily.families`)
MAX_WIDTH = 2**16  # channels of one layer read from a file; far above any CNN archfamily builds
MAX_CLASSES = 10**6
MAX_INPUT_SIZE = 4096  # the side of an input image a spec describes
MAX_PARAMS = 10**9  # a spec read from a file above this is damage, not a network (it would take 4 GB)


def spec_to_dict(spec: ArchSpec) -> dict[str, Any]:
    """The JSON form archfamily's files hold (lists, as JSON reads back); `family` says which spec class reads it.
    A spec with a form of its own (`to_dict`) writes that."""
    if hasattr(spec, "to_dict"):
        return spec.to_dict()
    items = asdict(spec)
    if items.get("input_size") == getattr(spec, "stem_input_size", 32):  # written only where it is not the default
        del items["input_size"]
    return {"family": spec.family, **{k: [list(r) if isinstance(r, tuple) else r for r in v] if isinstance(v, tuple)
                                      else v for k, v in items.items()}}


def _checked_field(family: FamilyType, key: str, value: Any) -> Any:
    """One field of a spec read from a file, with its exact type and a sane range; raises ValueError saying why.
    Fields this function does not name are checked by their declared type (a family's own whole numbers, say)."""
    if key in family.width_rows:
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(row, (list, tuple)) and all(is_whole(w, 0, MAX_WIDTH) for w in row) for row in value):
            raise ValueError(f"{key} must be rows of whole numbers from 0 to {MAX_WIDTH:,}")
        return tuple(tuple(row) for row in value)
    if key in ("stage_widths", "widths"):  # `widths`: a timm base's member's, one per channel group
        if not isinstance(value, (list, tuple)) or not all(is_whole(w, 1, MAX_WIDTH) for w in value):
            raise ValueError(f"{key} must be whole numbers from 1 to {MAX_WIDTH:,}")
        return tuple(value)
    bounds = {"num_classes": (0, MAX_CLASSES), "in_chans": (1, MAX_WIDTH), "input_size": (1, MAX_INPUT_SIZE)}
    declared = {f.name: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
                for f in fields(family.spec)}.get(key, "")
    if key in bounds or declared == "int":
        lo, hi = bounds.get(key, (0, MAX_WIDTH))
        if not is_whole(value, lo, hi):
            raise ValueError(f"{key} must be a whole number from {lo:,} to {hi:,}")
        return value
    if key == "compression":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError("compression must be a number in (0, 1]")
        return float(value)
    if declared == "str" and not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def spec_from_dict(data: Any, where: str = "spec") -> ArchSpec:
    """Inverse of `spec_to_dict`, strictly: exact types, sane ranges, a network under `MAX_PARAMS`.

    This is where specs from files and from timm's model_args enter, so anything malformed is one
    `UserError` that starts with `where` (the file, or the file and the field).
    """
    family = family_type(data.get("family") if isinstance(data, dict) else None, where)
    cls = family.spec
    known = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in data if k != "family" and k not in known)
    if unknown:
        raise UserError(f"{where}: unknown {cls.family} spec field {unknown[0]!r}")
    missing = [f.name for f in fields(cls) if f.name not in data and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:  # named here, not as the dataclass's TypeError (`__init__() missing 1 required ... argument`)
        raise UserError(f"{where}: a {cls.family} spec needs {' and '.join(repr(m) for m in missing)}")
    try:
        spec = cls(**{k: _checked_field(family, k, v) for k, v in data.items() if k != "family"})
    except (TypeError, ValueError, UserError) as exc:
        raise UserError(f"{where}: malformed {cls.family} spec: {exc}") from None
    if spec.num_params() > MAX_PARAMS:
        raise UserError(f"{where}: the spec describes a network of {spec.num_params():,} parameters; "
                        f"archfamily reads specs of up to {MAX_PARAMS:,}")
    return spec


BASE_EXAMPLES = "wrn-40-2, wrn-16-2, densenet-bc-100, densenet-bc-100-12, resnet-18, resnet-50-imagenet"


def base_spec(name: str, num_classes: int = 10) -> ArchSpec:
    """The unpruned base network of a name such as `wrn-40-2` or `densenet-bc-100`, from the registered families'
    base names.

    ResNets get the CIFAR stem unless the name ends in `-imagenet`, since
    archfamily trains on 32x32 CIFAR-10 images.
    """
    while True:
        for family in all_families():
            spec = family.base_spec(name.strip().lower(), num_classes)
            if spec is not None:
                return spec
        if not load_lazy_families():  # `timm:NAME` before anything imported the timm family
            break
    raise UserError(f"unknown base network {name!r}; examples: {BASE_EXAMPLES}")


def for_data(spec: ArchSpec, num_classes: int, input_size: int) -> ArchSpec:
    """`spec` with the head and the input size of a dataset, as timm's `num_classes` replaces a model's head: a
    network named for one dataset (wrn-16-2, a spec file) trains on any other. A family whose input size is fixed
    (a plug-in's class constant) takes only that size."""
    if num_classes == spec.num_classes and input_size == spec.input_size:
        return spec
    if "input_size" not in {f.name for f in fields(spec)}:
        if input_size != spec.input_size:
            raise UserError(f"a {spec.family} network takes {spec.input_size}x{spec.input_size} images, not "
                            f"{input_size}x{input_size}; give --input-size {spec.input_size}")
        return replace(spec, num_classes=num_classes)
    return replace(spec, num_classes=num_classes, input_size=input_size)


def native_input_size(spec: ArchSpec) -> int:
    """The image side a network trains at when its data's images differ in size (or are large): a timm base's
    pretrained cfg's, else ImageNet's 224."""
    return spec.native_input_size() if hasattr(spec, "native_input_size") else 224


def stage_ratios(spec: ArchSpec, base: ArchSpec) -> list[float]:
    """Fraction of each stage's prunable channels that survive in `spec`, relative to `base`."""
    kept: dict[int, int] = {}
    full: dict[int, int] = {}
    for stage, w, w0 in zip(base.prunable_stages(), spec.prunable_widths(), base.prunable_widths()):
        kept[stage] = kept.get(stage, 0) + w
        full[stage] = full.get(stage, 0) + w0
    return [kept[s] / full[s] for s in sorted(full)]


def block_ratios(spec: ArchSpec, base: ArchSpec) -> list[float]:
    """Kept / original of every prunable width, in `prunable_widths` order."""
    return [w / w0 for w, w0 in zip(spec.prunable_widths(), base.prunable_widths())]


# archfamily's own families, registered as a plug-in registers one (`archfamily.families`).
register_family(FamilyType(
    name="wrn", spec=WideResNetSpec, model="archfamily.models.wrn:WideResNet", default_base="wrn-40-2",
    bases=((r"wrn-(\d+)-(\d+(?:\.\d+)?)", lambda m, nc: WideResNetSpec.from_depth_width(int(m[1]), float(m[2]), nc)),),
    width_rows=("inner_widths",)))
register_family(FamilyType(
    name="densenet_bc", spec=DenseNetBCSpec, model="archfamily.models.densenet:DenseNetBC",
    default_base="densenet-bc-100",
    bases=((r"densenet-bc-(\d+)(?:-(\d+))?", lambda m, nc: DenseNetBCSpec.from_depth_growth(int(m[1]), int(m[2] or 12), nc)),),
    width_rows=("bottleneck_widths",), paper_recipe="densenet", paper_finetune="finetune-densenet"))
register_family(FamilyType(
    name="resnet", spec=ResNetSpec, model="archfamily.models.resnet:ResNet", default_base="resnet-18",
    bases=((r"resnet-(\d+)(-imagenet)?", lambda m, nc: ResNetSpec.from_depth(int(m[1]), "imagenet" if m[2] else "cifar", nc)),),
    width_rows=("mid_widths", "mid2_widths"), first_conv="stem.0", feature_indices=(0, 1, 2, 3, 4)))

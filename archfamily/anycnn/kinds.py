"""Which timm models are CNNs: archfamily prunes channel groups of convolutions, so a model that attends across
positions (queries against keys), mixes them by a recurrence or a state space, or turns the image into a sequence
of patch tokens is refused before anything is traced, in one line that says so (a transformer's heads and tokens
are no channel groups the rebuild knows).

A model is told by what it holds, not by its name: a layer with query and key projections (timm's `qkv`, `q` and
`k` or `kv`, `query` and `key`) or a class named as attention (`Attention`, `WindowAttention`, `XCA`...),
PyTorch's `MultiheadAttention` or an RNN, a state-space mixer (`HSMSSD`), or patch tokens (timm's `PatchEmbed`,
which flattens the image into tokens, or a position embedding or class token). Channel gates that happen to be
called attention (squeeze-excitation, ECA, CBAM, split attention, selective kernels) weigh channels or positions
without queries and keys: they are CNN layers.
"""
from __future__ import annotations

import re
from typing import Optional

from torch import nn

QUERY_KEY = ({"qkv"}, {"q", "k"}, {"q", "kv"}, {"qk", "v"}, {"query", "key"}, {"to_qkv"})  # a layer's children
ATTENTION_NAME = re.compile(r"Attention|SelfAttn|HaloAttn|NonLocalAttn|LambdaLayer|^XCA$|MHSA|^SHSA$|^SHMA$|LiteMLA")
STATE_SPACE_NAME = re.compile(r"SSD$|SSM$|Mamba$")
CHANNEL_GATES = frozenset({"SplitAttn", "SelectiveKernelAttn", "ChannelAttn", "SpatialAttn", "LightChannelAttn",
                           "LightSpatialAttn", "CbamModule", "LightCbamModule", "EcaModule", "CecaModule"})
TOKEN_PARAMETERS = ("pos_embed", "cls_token", "dist_token", "reg_token", "relative_position_bias_table")


def not_a_cnn(model: nn.Module) -> Optional[str]:
    """Why `model` is no CNN archfamily prunes ("self-attention (Attention at stages.3.0.attn)"), or None for a
    CNN."""
    from timm.layers import PatchEmbed

    for name, module in model.named_modules():
        kind = type(module).__name__
        children = {child for child, _ in module.named_children()}
        if isinstance(module, nn.MultiheadAttention) or any(keys <= children for keys in QUERY_KEY) or \
                (ATTENTION_NAME.search(kind) and kind not in CHANNEL_GATES):
            return f"self-attention ({kind} at {name or 'the top'})"
        if STATE_SPACE_NAME.search(kind):
            return f"a state-space token mixer ({kind} at {name or 'the top'})"
        if isinstance(module, nn.RNNBase):
            return f"a recurrent token mixer ({kind} at {name or 'the top'})"
        if isinstance(module, PatchEmbed) and getattr(module, "flatten", False):
            return f"patch tokens ({kind} at {name or 'the top'})"
    for name, _ in model.named_parameters():
        if name.rpartition(".")[2] in TOKEN_PARAMETERS:
            return f"patch tokens or positions (the parameter {name})"
    return None

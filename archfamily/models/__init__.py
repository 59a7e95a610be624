"""Build a network from its spec: `build_model(spec)`. Also here:
measured counts of a built model (`counting`) and model files and resumable training state (`checkpoint`).

Floor 2: may import the helpers (the modules directly under `archfamily/`, `specs` among them) and nothing else.
"""
from __future__ import annotations

from torch import nn

from archfamily.specs import ArchSpec, family_type


def build_model(spec: ArchSpec) -> nn.Module:
    """The network a spec describes (its family's registered network class); its parameter count is
    `spec.num_params()` exactly."""
    return family_type(spec.family).model_class()(spec)

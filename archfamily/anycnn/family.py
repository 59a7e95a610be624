"""The `timm` family: any timm CNN as a base, registered as a plug-in registers a family (`archfamily.families`).

`--base timm:mobilenetv2_050` names the base (traced at CIFAR's 32x32 input, 10 classes), a member is a
`TimmSpec` (the base's name and one width per channel group), and timm builds it as `archfamily_timm` with
those fields as `model_args`. Importing this module registers the family: the command line and the zoo do, and
`archfamily.families` does on the first lookup of a `timm` spec or base name (`LAZY_FAMILIES`).
"""
from __future__ import annotations

from archfamily.anycnn.spec import PREFIX, TimmSpec
from archfamily.families import FamilyType, register_family

TIMM = register_family(FamilyType(
    name="timm", spec=TimmSpec, model="archfamily.anycnn.spec:timm_network", default_base=f"{PREFIX}resnet18",
    bases=((r"timm:([a-z0-9_.]+)", lambda m, nc: TimmSpec.of_base(m[1], nc)),),
    paper_recipe="fast", paper_finetune="finetune", graph_pruned=True))

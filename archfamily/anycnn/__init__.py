"""Any timm CNN as a base (issue "Bring your own network"): its coupled channel groups traced by Torch-Pruning's
dependency graph (`groups.py`), a description of a member as the base's name and one width per group
(`spec.py`), and the network rebuilt at any widths, smaller or larger than the base's (`rebuild.py`); masks and
Fisher saliency over the groups (`masks.py`), a pruning run (`prune.py`), physical removal (`compress.py`), and
the `timm` family that makes all of it a base `archfamily derive --base timm:NAME` takes (`family.py`).

Floor 4, beside `latency`: may import the helpers, `models` and `training` (`pruning`'s derive runs its engine).
"""

"""Any timm CNN as a base (issue "Bring your own network"): its coupled channel groups traced by Torch-Pruning's
dependency graph (`groups.py`), a description of a member as the base's name and one width per group
(`spec.py`), and the network rebuilt at any widths, smaller or larger than the base's (`rebuild.py`).

Floor 5, beside `pruning`: may import the helpers, `models` and `training`.
"""

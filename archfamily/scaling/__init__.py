"""Scaling rules: one pruning trajectory (or a base alone) -> the family member at any parameter or MAC budget.

Floor 3: may import the helpers and `specs` (rules are arithmetic on specs: no torch).
"""

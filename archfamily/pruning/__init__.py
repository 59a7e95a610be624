"""Structured pruning: gate masks while pruning (`Pruner`), physical removal afterwards (`compress`)."""
from archfamily.pruning.compress import compress, pruned_spec
from archfamily.pruning.pruner import METHODS, Pruner

__all__ = ["compress", "pruned_spec", "Pruner", "METHODS"]

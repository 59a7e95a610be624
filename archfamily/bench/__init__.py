"""`archfamily bench`: hardware speed of reduced, pruned and family networks at matched budgets.

Three steps, one module each: `select` chooses the networks to time at each budget
(from a family, or the trained networks of a study), `measure` times them all in
every setting, interleaved, and `report` (with `plots`) writes the tables, JSON and
plots. Weights are random unless the networks were trained: speed does not depend
on them.
"""
from archfamily.bench.measure import QUICK, BenchConfig, run
from archfamily.bench.report import write_report
from archfamily.bench.select import BenchNet, TrainedGroup, networks, trained_groups, trained_networks

__all__ = ["QUICK", "BenchConfig", "BenchNet", "TrainedGroup", "networks", "run", "trained_groups",
           "trained_networks", "write_report"]

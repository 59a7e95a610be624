"""Latency on this machine: honest timing (`timing`, with `allocator`'s steady memory; no figure taken while the
process did not get its cores), its figures kept per machine and setting (`cache`), a per-device latency model
summed from timed operations (`model`), and latency budgets: the largest family member within a measured
latency (`budgets`).

Floor 4: may import the helpers, `specs`, `models`, `data` and `scaling`.
"""

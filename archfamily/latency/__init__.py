"""Latency on this machine: honest timing (`timing`, with `allocator`'s steady memory), a per-device latency model
summed from timed operations (`model`), and latency budgets: the largest family member within a measured
latency (`budgets`).

Floor 4: may import the helpers, `specs`, `models`, `data` and `scaling`.
"""

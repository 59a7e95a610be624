"""Structured pruning of any network, and what a pruning run records: the one engine (`run.PruneRun`: channel
groups from the network's family or from Torch-Pruning's trace, masked by `masks`, scored by any method registered
in `criteria`, at what a channel costs by `costs`, removed for real by `compress`), the settings of a derive run
(`config`), the `family.json` a run writes (`family_file`), and `derive`, the library half of `archfamily derive`.

Floor 5: may import the helpers, `specs`, `models`, `data`, `training`, `scaling`, `latency` and `anycnn`.
"""

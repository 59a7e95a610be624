"""Training a network: recipes (named schedules), the one trainer, the arithmetic it runs in (`precision`),
DistributedDataParallel set-up (`distributed`), run folders (`runs`) and their `metrics.json` (`metrics_file`),
test error (`evaluation`), and `scratch`, the library half of `archfamily train` (any spec from scratch into a run
folder).

Floor 3: may import the helpers, `models`, `data` and `specs`.
"""

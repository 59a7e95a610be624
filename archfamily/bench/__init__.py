"""`archfamily bench`: hardware speed of reduced, pruned and family networks at matched budgets.

Three steps, one module each: `select` chooses the networks to time at each budget
(from a family, or the trained networks of a study), `measure` times them all in
every setting and runtime (`runtimes`: eager PyTorch, ONNX Runtime), interleaved, and
`report` (with `plots`, both reading `rows`) writes the tables, JSON and plots. Weights
are random unless the networks were trained: speed does not depend on them.

Floor 8: may import every floor below it (the helpers up to `hub`); not `zoo`, `study` or the CLI.
"""

"""Structured pruning of the built-in families and what a pruning run records: the pruning methods, registered by
name (`criteria`: saliency criteria, and cost weighting as a wrapper over one), their saliencies (`saliency`), the
params, MACs or latency a channel costs (`costs`), gate masks while pruning (`pruner`), physical removal afterwards
(`compress`), the two pruning engines a derive run drives (`engines`: gates for the built-in families, channel-group
masks for a timm base), the `family.json` a run writes (`family_file`), and `derive`, the library half of
`archfamily derive`.

Floor 5: may import the helpers, `specs`, `models`, `data`, `training`, `scaling`, `latency` and `anycnn`.
"""

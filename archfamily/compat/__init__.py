"""Which timm CNNs archfamily handles, measured rather than claimed: one network taken through every stage a user's
run goes through (`check`: trace, rebuild, count, prune, export, `local-dir:`, ONNX, features), and the table and
JSON a sweep over timm writes of them, with what changed since the last sweep (`report`).

Floor 7, beside `zoo`: may import the helpers up to `hub`; not `bench`, `study` or the CLI.
"""

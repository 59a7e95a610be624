"""archfamily's networks as timm models: the timm entrypoints and pretrained configs (`timm_models`) and export as
a timm `local-dir:` folder or ONNX (`export`).

Floor 6: may import everything below it (helpers, `specs`, `models`, `data`, `training`); never `zoo`, `bench`,
`study` or the CLI.
"""

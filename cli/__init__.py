"""The `archfamily` command line (click).

Floor 10 (`archfamily.cli`): may import every floor below it; nothing imports it but `archfamily/__main__.py`.
"""

"""archfamily: turn one structured-pruning run into a family of CNN architectures."""

__version__ = "0.1.0"

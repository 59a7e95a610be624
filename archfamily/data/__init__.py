"""CIFAR-10 as tensors (`cifar`: from the vendored archive, torchvision's folder or an ImageFolder tree) and the
deterministic, augmented training batches drawn from it (`batches`).

Floor 2: may import archfamily's helpers (the modules directly under `archfamily/`) and nothing else of archfamily.
"""

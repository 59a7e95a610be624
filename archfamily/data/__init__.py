"""Image datasets as tensors or streamed files: any ImageFolder tree or archive of one (`dataset`, listed safely by
`sources`, each image read by `images`), CIFAR-10's own forms (`cifar`), the deterministic, augmented training
batches drawn from them in memory (`batches`) or from their files (`streaming`), and the facts a network trained
on them carries.

Floor 2: may import archfamily's helpers (the modules directly under `archfamily/`) and nothing else of archfamily.
"""

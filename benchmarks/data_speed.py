"""How fast the streaming data path feeds training, so a user can see how many workers a GPU needs.

    python benchmarks/data_speed.py                             # 400 generated 320x240 JPEGs at 224 px
    python benchmarks/data_speed.py --data photos/ --input-size 224 --workers 0,1,2 --network timm:resnet18

It prints (1) images/s decoded and augmented by one worker process (timm's training transform, as
`StreamBatches` runs it: open, RGB, random-resized crop, flip, colour jitter, to uint8), the figure to divide a
GPU's training images/s by to get the workers it needs; and (2) for each worker count, a real training step of
`--network` on streamed batches (`Trainer.train_step`) split into the time spent waiting for the batch and the
rest, as the share of the step spent waiting. Medians over the timed steps, with their spread. Prints figures;
asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def generated_folder(root: Path, images: int, classes: int = 4) -> Path:
    """`images` 320x240 JPEGs of noise under train/ (and a few under val/): decoding cost is a photo's."""
    rng = np.random.default_rng(0)
    for split, n in (("train", images), ("val", classes)):
        for i in range(n):
            folder = root / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(folder / f"{i}.jpg", quality=90)
    return root


def decode_rate(split, images: int) -> float:
    """Images/s of one process through `StreamBatches`' transform (no worker processes: this process is one)."""
    from archfamily.data.streaming import Images, train_transform

    items = Images(split, train_transform(split.input_size))
    start = time.perf_counter()
    for i in range(images):
        items[i % len(split), i]
    return images / (time.perf_counter() - start)


def step_shares(data, network: str, workers: int, steps: int) -> tuple[float, float, float]:
    """(median step seconds, median share waiting for data, spread of that share) of `steps` training steps."""
    from archfamily.data.streaming import StreamBatches
    from archfamily.models import build_model
    from archfamily.specs import base_spec, for_data
    from archfamily.training.recipes import FAST
    from archfamily.training.trainer import Trainer

    spec = for_data(base_spec(network), data.num_classes, data.input_size)
    trainer = Trainer(build_model(spec), data, FAST, torch.device("cpu"))
    trainer.stream = StreamBatches(data.train_x, 32, 0, torch.device("cpu"), data.mean, data.std,
                                   channels_last=True, workers=workers)
    trainer.train_step()  # the first: worker start-up and one-off allocations
    totals, waits = [], []
    for step in range(1, steps + 1):
        start = time.perf_counter()
        x, y = trainer.stream.batch(step)
        waited = time.perf_counter() - start
        trainer.loss_and_grads(x, y)
        trainer.optimizer.step()
        totals.append(time.perf_counter() - start)
        waits.append(waited)
    shares = [w / t for w, t in zip(waits, totals)]
    return statistics.median(totals), statistics.median(shares), max(shares) - min(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="An ImageFolder tree [400 generated 320x240 JPEGs]")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--workers", default="0,1,2", help="Worker counts to time training steps with")
    parser.add_argument("--network", default="timm:lcnet_050")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--images", type=int, default=200, help="Images one process decodes for its rate")
    args = parser.parse_args()

    from archfamily.data.dataset import load_data
    from archfamily.training.precision import cpu_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data or str(generated_folder(Path(tmp), 400))
        data = load_data(folder, input_size=args.input_size, data_path="stream")
        print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads; {len(data.train_x):,} training images "
              f"streamed at {data.input_size} px")
        rate = decode_rate(data.train_x, args.images)
        print(f"one worker decodes and augments {rate:.0f} images/s (timm's training transform)")
        print(f"{'workers':>7}  {'step s':>7}  {'waiting for data':>16}  {'spread':>6}")
        for workers in (int(w) for w in args.workers.split(",")):
            seconds, share, spread = step_shares(data, args.network, workers, args.steps)
            print(f"{workers:>7}  {seconds:7.3f}  {share:15.0%}  {spread:6.0%}")


if __name__ == "__main__":
    main()

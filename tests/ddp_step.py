"""Run by `torchrun` from test_train.py: two gloo processes train one step with DDP."""
import sys

import torch
import torch.distributed as dist

from archfamily.data.dataset import in_memory
from archfamily.training.distributed import init_distributed, shutdown_distributed
from archfamily.models import build_model
from archfamily.training.recipes import WRN
from archfamily.specs import base_spec
from archfamily.training.trainer import Trainer


def main(out: str) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    data = in_memory(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(64) % 10,
                   torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(20) % 10,
                   "fake")
    ctx = init_distributed(torch.device("cpu"))
    assert ctx.world == 2 and dist.get_backend() == "gloo"
    trainer = Trainer(build_model(base_spec("wrn-10-1")), data, WRN.shortened(1), torch.device("cpu"), seed=0,
                      dist_ctx=ctx)
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    trainer.train_step()
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    error = trainer.evaluate()
    torch.save({"before": before, "after": after, "error": error}, f"{out}/rank{ctx.rank}.pt")
    del trainer  # the DDP wrapper must go before the group does: see shutdown_distributed
    shutdown_distributed(ctx)


if __name__ == "__main__":
    main(sys.argv[1])

"""Lightning's DDP for a model that is solved, not trained (sGDML).

Its processes share the solve (each computes its rows of every kernel product, see
:class:`~geopatra.models.sgdml.distributed.DistributedKernel`), not gradients: there is nothing for
torch's ``DistributedDataParallel`` to synchronise, and it refuses a module without trainable
parameters. The ``geopatra`` command uses this strategy for such a model under
``--trainer.strategy ddp``; everything else (process group, ranks, metric reduction) is Lightning's.
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy


class SolvedModelDDPStrategy(DDPStrategy):
    """DDP that leaves a module without trainable parameters unwrapped (one that has them is wrapped
    as by :class:`DDPStrategy`)."""

    def configure_ddp(self) -> None:
        if any(p.requires_grad for p in self.model.parameters()):
            super().configure_ddp()

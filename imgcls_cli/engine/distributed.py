"""Data-parallel training on PyTorch's own engine: torchrun's processes, DistributedDataParallel, collectives.

`torchrun --nproc_per_node=N -m imgcls_cli train ...` starts N processes; each reads RANK, WORLD_SIZE and
LOCAL_RANK from its environment. `imgcls train distributed.nproc=N` starts them itself (`launch`), as
`torchrun --standalone` would. Rank 0 writes the run directory; the other ranks train, all-reduce and stay quiet.
"""
from __future__ import annotations

import logging
import os
import sys
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imgcls_cli.errors import UserError, as_int
from imgcls_cli.specs.loop import DistributedSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger("imgcls")


def env_rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) in a plain process."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def is_worker() -> bool:
    """True in a process that torchrun (or distributed.nproc) started as one of several."""
    return env_rank()[1] > 1


def quiet_rank() -> bool:
    """True in the ranks other than 0: they print nothing, rank 0 speaks for the run."""
    return env_rank()[0] > 0


@dataclass
class Dist:
    """This process's place in the job; world_size 1 is a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    on: Any = None  # where collectives' tensors live: this rank's GPU with nccl, else the CPU

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process: cuda becomes cuda:LOCAL_RANK."""
        import torch

        if self.enabled and device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise UserError(f"process {self.local_rank} of this machine wants cuda:{self.local_rank}, but there "
                                f"are {torch.cuda.device_count()} CUDA device(s): start at most that many processes "
                                "a machine (distributed.nproc, torchrun --nproc_per_node), or train on device=cpu.")
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DistributedDataParallel around the model (its gradients averaged over the ranks at each backward)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the ranks (float64)."""
        return self._reduce(values, "SUM")

    def max(self, values: list[float]) -> list[float]:
        """Each value's largest over the ranks."""
        return self._reduce(values, "MAX")

    def _reduce(self, values: list[float], op: str) -> list[float]:
        if not self.enabled:
            return [float(v) for v in values]
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.on)
        dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's obj, in rank order (picklable objects)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's obj on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def start(opts: DistributedSpec, device: torch.device) -> tuple[Dist, torch.device]:
    """Join the job torchrun started (nothing to do in a single process); returns it and this rank's device."""
    rank, world, local = env_rank()
    if world == 1:
        return Dist(), device
    import torch.distributed as dist

    ctx = Dist(rank, world, local)
    device = ctx.device(device)
    backend = opts.backend if opts.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if backend == "nccl" and device.type != "cuda":
        raise UserError("distributed.backend=nccl needs CUDA devices; on CPU use gloo (or auto).")
    if opts.sync_bn and device.type != "cuda":
        raise UserError("distributed.sync_bn=true needs CUDA: PyTorch's SyncBatchNorm trains on GPUs only; "
                        "on CPU leave it false (each process keeps its own batch statistics).")
    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=device if backend == "nccl" else None)
    ctx.backend, ctx.on = backend, device if backend == "nccl" else "cpu"
    if rank > 0:  # rank 0 speaks for the run
        logging.getLogger("imgcls").setLevel(logging.ERROR)
    return ctx, device


def prepare(model: nn.Module, ctx: Dist, sync_bn: bool) -> nn.Module:
    """distributed.sync_bn=true: batch norm computes its statistics over the whole batch of every rank."""
    if sync_bn and ctx.enabled:
        from torch import nn

        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        log.info("distributed.sync_bn=true: batch norm layers synchronize their statistics across processes")
    elif sync_bn:
        log.info("distributed.sync_bn=true has no effect in a single process")
    return model


def nproc_from(args: list[str]) -> int:
    """distributed.nproc=N among the command-line arguments (1 when absent)."""
    values = [a.split("=", 1)[1] for a in args if a.split("=", 1)[0].lstrip("+") == "distributed.nproc" and "=" in a]
    if not values:
        return 1
    try:
        return as_int(int(values[-1]), "distributed.nproc", minimum=1)
    except ValueError:
        raise UserError(f"distributed.nproc must be a whole number >= 1, not '{values[-1]}'.") from None


def launch(nproc: int, argv: list[str]) -> int:
    """Run `imgcls <argv>` in nproc processes on this machine through torch.distributed's elastic launcher (what
    `torchrun --standalone --nproc_per_node=nproc -m imgcls_cli ...` does); the exit status is the workers'."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from imgcls_cli.cores import usable_cores

    # CPU processes share the cores out; torchrun would set 1 thread each (and warn).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    try:
        elastic_launch(config, sys.executable)("-m", "imgcls_cli", *argv)
    except SignalException as exc:  # passed on to the workers, which saved last.pt (rank 0 said where)
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        if 2 in codes:  # a user's mistake, reported in one line by rank 0
            return 2
        signals = [-c for c in codes if c < 0]
        return 128 + signals[0] if signals else next((c for c in codes if c), 1)
    return 0

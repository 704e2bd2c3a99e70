"""The few collectives the checkpoint manager needs: every decision that touches the run directory is taken
once (rank 0, or the lowest rank with an error) and shared, so all ranks act alike. Single-process safe."""

import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast(obj):
    """Rank 0's `obj` on every rank (small Python objects of our own making)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def first_error(local: str | None) -> str | None:
    """The error of the lowest rank that has one, on every rank (all ranks then act alike)."""
    return next((e for e in gather(local) if e is not None), None)

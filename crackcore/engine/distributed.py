"""Multi-process training under `torchrun` (DistributedDataParallel: gloo on CPU, NCCL on GPU)."""
from __future__ import annotations

import os
from dataclasses import replace

import torch
import torch.distributed as dist

from .config import TrainConfig
from .train import train


def train_distributed(cfg: TrainConfig, resume: bool = False) -> None:
    """§IV-B training split over WORLD_SIZE processes; rank 0 alone writes checkpoints and history."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    try:
        # Each process sees batch_size / world images per step, so the global batch stays the paper's 16.
        per_rank = max(1, cfg.batch_size // world)
        local = replace(cfg, batch_size=per_rank)
        train(local, resume=resume, progress=rank == 0, rank=rank, world=world, record_config=cfg)
        dist.barrier()
    finally:
        dist.destroy_process_group()

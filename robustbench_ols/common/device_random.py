"""Random draws that do not depend on the device: the training loop's shuffling and crop/flip offsets, the
methods' own draws and PGD's random starts all come from CPU generators and are then copied to the device.

Why: past one wave of threads CUDA's random output depends on the GPU model (pytorch issues 143086 and
194676), so draws from a CUDA generator differ between GPU models and from the CPU's: a Slurm requeue onto
another GPU model would change a run's batches mid-run, and a CPU and a GPU run of one spec would never see
the same batches. The CPU's mt19937 output depends on the seed alone. On a CPU these draws are exactly the
ones the device's own generator (the CPU's) made before, so no CPU record changes.
"""
from __future__ import annotations

import torch


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed` (reduced into the range torch accepts)."""
    return torch.Generator().manual_seed(int(seed) % (2 ** 63))


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """`t`, drawn on the CPU, on `device`. To a GPU through pinned memory and without blocking: a copy from
    pageable memory waits for the device's stream first, which would be one host sync per training step."""
    device = torch.device(device)
    if device.type == "cpu":
        return t
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)

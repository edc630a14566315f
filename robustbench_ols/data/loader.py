"""The training images as batches: a class-balanced seeded subset, and a loader that shuffles and augments
whole batches on the device holding the uint8 images, from draws made on the CPU."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robustbench_ols.common.device_random import cpu_generator, to_device
from robustbench_ols.common.errors import DataError


def class_balanced_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset with n // K images per class (the remainder of n spread one
    each over randomly chosen classes)."""
    classes = np.unique(labels)
    k = len(classes)
    if not k <= n <= len(labels):
        raise DataError(f"--train-subset {n} must be between the number of classes ({k}) and the "
                        f"training set size ({len(labels)}); use 0 for the whole set")
    rng = np.random.Generator(np.random.PCG64(seed))
    sizes = np.array([np.sum(labels == c) for c in classes])
    per = np.full(k, n // k)
    spare = np.flatnonzero(sizes > n // k)  # only classes with an image to spare take the remainder
    if sizes.min() < n // k or len(spare) < n % k:
        raise DataError(f"--train-subset {n} needs {n // k} or {n // k + 1} images per class, but the "
                        f"smallest class has {sizes.min()}; use a smaller subset")
    per[rng.choice(spare, n % k, replace=False)] += 1
    picked = []
    for c, m in zip(classes, per):
        picked.append(rng.choice(np.flatnonzero(labels == c), m, replace=False))
    return np.sort(np.concatenate(picked))


@dataclass
class Batch:
    """x: float (B, 3, 32, 32) in [0, 1]; y: the (noisy) labels; index: positions in the train set."""
    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor


class TrainLoader:
    """Shuffles and augments whole batches on the device holding the uint8 images.

    Augmentation (the CIFAR standard): random crop 32 from the image zero-padded by 4 pixels and a
    horizontal flip with probability 1/2, a fresh draw per image, done as one gather per batch (no
    per-image Python). Each epoch's randomness comes from a CPU generator seeded by (seed, epoch), drawn
    at the epoch's start and copied to the device once: a resumed run sees exactly the batches an
    uninterrupted one would, and a run sees the same batches on every device (common/device_random.py).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, seed: int,
                 augment: bool = True, channels_last: bool = False, pad: int = 4):
        self.images, self.labels = images, labels
        self.batch_size, self.seed, self.augment = batch_size, seed, augment
        self.channels_last, self.pad = channels_last, pad
        self.device = images.device
        n = len(images)
        # A last batch of one image would break batch norm: drop it (a different one each epoch).
        self.num_batches = n // batch_size + (1 if n % batch_size > 1 else 0)

    def __len__(self) -> int:
        return self.num_batches

    def draws(self, epoch: int) -> tuple[torch.Tensor, list]:
        """The epoch's permutation and each batch's (dy, dx, flip) (empty without augmentation), on the CPU,
        in the order the generator makes them: the permutation, then batch by batch."""
        g = cpu_generator(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.images), generator=g)
        offsets = []
        if self.augment:
            for b in range(self.num_batches):
                size = len(perm[b * self.batch_size:(b + 1) * self.batch_size])
                offsets.append(augment_draws(size, g, self.pad))
        return perm, offsets

    def epoch(self, epoch: int):
        perm, offsets = self.draws(epoch)
        sizes = [len(o[0]) for o in offsets]
        perm = to_device(perm, self.device)  # one copy per epoch, not per batch
        if offsets:
            flat = to_device(torch.cat([torch.cat([dy, dx, flip.long()]) for dy, dx, flip in offsets]), self.device)
            offsets = [part.view(3, -1) for part in flat.split([3 * s for s in sizes])]
        for b in range(self.num_batches):
            idx = perm[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[idx]
            if self.augment:
                dy, dx, flip = offsets[b]
                x = crop_and_flip(x, dy, dx, flip.bool(), self.pad)
            x = x.float().div_(255)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield Batch(x, self.labels[idx], idx)


def augment_draws(b: int, g: torch.Generator, pad: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The crop offsets dy, dx in 0..2*pad and the flips of `b` images, drawn (on g's device) in this order."""
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g, device=g.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g, device=g.device)
    flip = torch.rand(b, generator=g, device=g.device) < 0.5
    return dy, dx, flip


def augment_batch(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random pad-`pad` crop and horizontal flip of a uint8 batch (B, C, H, W), drawn from g (on x's device)."""
    return crop_and_flip(x, *augment_draws(len(x), g, pad), pad)


def crop_and_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
                  pad: int = 4) -> torch.Tensor:
    """The pad-`pad` crops at offsets (dy, dx) of a uint8 batch (B, C, H, W), flipped where `flip`, one gather."""
    b, c, h, w = x.shape
    dev = x.device
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))  # zero fill, like torchvision RandomCrop
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    rows = dy[:, None] + ar_h  # (B, H)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (B, W), reversed if flipped
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]

"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017, sec. 4.2).

One scalar T > 0 divides all logits: q = softmax(z / T). T is fitted on a held-out validation split
by minimising the NLL, and then applied unchanged to the test logits; it never changes the argmax,
so accuracy is untouched.

The fit works on the inverse temperature b = 1/T, in which the NLL
    f(b) = mean_i [logsumexp(b z_i) - b z_{i, y_i}]
is convex (a log-sum-exp of functions linear in b), with
    f'(b) = mean_i (E_q[z_i] - z_{i, y_i}),   f''(b) = mean_i Var_q(z_i) >= 0.
A Newton iteration safeguarded by a bracket on the sign of f' therefore finds the global minimum
deterministically (no learning rate, no random start), in ~6-10 evaluations.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def _as_logits_labels(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.as_tensor(logits)
    y = torch.as_tensor(labels, device=z.device)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"logits must have shape (N, K) with N, K > 0, got {tuple(z.shape)}")
    if y.ndim != 1 or y.shape[0] != z.shape[0]:
        raise ValueError(f"labels must have shape (N,) = ({z.shape[0]},), got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.long()
    if not bool((y >= 0).all() & (y < z.shape[1]).all()):
        raise ValueError(f"labels must lie in [0, K) = [0, {z.shape[1]})")
    z = z.double()
    if not bool(torch.isfinite(z).all()):
        raise ValueError("logits contain NaN or infinite values")
    # Shifting each row changes neither softmax nor E_q[z] - z_y, and keeps the variance accurate.
    return z - z.max(1, keepdim=True).values, y


def _grad_hess(z: torch.Tensor, zy: torch.Tensor, b: float) -> tuple[float, float]:
    """f'(b) and f''(b) of the mean NLL of softmax(b z) (see the module docstring)."""
    q = torch.softmax(b * z, dim=1)
    ez = (q * z).sum(1)
    var = (q * (z - ez[:, None]).square()).sum(1)
    return float((ez - zy).mean()), float(var.mean())


def fit_temperature(logits, labels, *, max_iter: int = 100,
                    bounds: tuple[float, float] = (0.01, 100.0)) -> float:
    """The temperature T minimising the mean NLL of softmax(logits / T) on (logits, labels).

    `logits`: (N, K) pre-softmax scores of a validation split (never the test set), `labels`: (N,)
    in [0, K). T is searched in `bounds` (inclusive); an optimum outside them returns the nearer
    bound (e.g. the upper one when the logits carry no information about the labels, the lower one
    when every validation sample is already classified correctly with a margin); logits that are
    constant along each row leave the NLL flat and return 1.0. Deterministic: a bracket on 1/T found
    in steps of 4x from T = 1, then safeguarded Newton inside it; at most `max_iter` evaluations of
    the gradient (typically 6-10). Returns a Python float.
    """
    t_lo, t_hi = float(bounds[0]), float(bounds[1])
    if not 0 < t_lo < t_hi < math.inf:
        raise ValueError(f"bounds must satisfy 0 < low < high < inf, got {bounds!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter!r}")
    z, y = _as_logits_labels(logits, labels)
    zy = z.gather(1, y[:, None]).squeeze(1)
    b_min, b_max = 1 / t_hi, 1 / t_lo  # the search runs on b = 1/T
    b = min(max(1.0, b_min), b_max)  # start at T = 1
    g, h = _grad_hess(z, zy, b)
    evals = 1
    # Bracket the root of the increasing f' in steps of 4x from T = 1 (T = 5 takes 3 evaluations).
    lo, hi = b_min, b_max
    if g > 0:  # the optimum is at a smaller b (a larger T)
        while g > 0 and evals < max_iter:
            if b == b_min:
                return t_hi
            hi, b = b, max(b / 4, b_min)
            g, h = _grad_hess(z, zy, b)
            evals += 1
    elif g < 0:
        while g < 0 and evals < max_iter:
            if b == b_max:
                return t_lo
            lo, b = b, min(b * 4, b_max)
            g, h = _grad_hess(z, zy, b)
            evals += 1
    # Newton inside the bracket [lo, hi]; a step that leaves it bisects instead (geometrically).
    while g != 0 and evals < max_iter:
        lo, hi = (b, hi) if g < 0 else (lo, b)
        nb = b - g / h if h > 0 else math.inf
        if not lo < nb < hi:
            nb = math.sqrt(lo * hi)
        done = abs(nb - b) <= 1e-10 * b or hi - lo <= 1e-10 * hi
        b = nb
        if done:
            break
        g, h = _grad_hess(z, zy, b)
        evals += 1
    return 1 / b


def apply_temperature(logits, temperature: float):
    """logits / temperature (same type as `logits`: a torch tensor or a numpy array); apply softmax
    afterwards for the calibrated probabilities (Guo et al. 2017). `temperature` must be > 0."""
    t = float(temperature)
    if not (0 < t < math.inf):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if isinstance(logits, torch.Tensor):
        return logits / t
    return np.asarray(logits) / t

"""Two-component beta mixture fitted by EM (Arazo et al., "Unsupervised Label Noise Modeling and Loss
Correction", ICML 2019), as pure functions on numpy float64 arrays.

Conventions
- Input: per-sample losses (any real values; numpy array, list or a CPU/GPU tensor, copied to host).
- `fit_bmm` keeps the losses between the 5th and 95th percentiles (numpy's default linear
  interpolation), min-max normalises them with those two percentiles,
  x = (loss - p5) / (p95 - p5 + 1e-6) (the 1e-6 guards p95 = p5, as in the authors' code, which
  also shifts p5 by 1e-5; omitted here), clips
  x to [1e-3, 1 - 1e-3] and runs `fit_beta_mixture` on them.
- `fit_beta_mixture` (the EM core, usable on data already in (0, 1)): init alpha = [1, 2],
  beta = [2, 1], weights [1/2, 1/2]; 10 iterations of
  E-step: r_k(x) = pi_k Beta(x; a_k, b_k), floored at 1e-12, normalised over k;
  M-step: weighted method of moments, m = sum r x / sum r, v = sum r (x - m)^2 / sum r,
  a = m (m (1 - m) / v - 1), b = a (1 - m) / m; pi_k = mean of r_k.
  The data are clipped to [1e-4, 1 - 1e-4] first (the authors' fit does the same; a no-op after
  `fit_bmm`'s normalisation).
- The noisy component is the one with the larger mean a / (a + b) (the authors' code assumes index
  1, the component initialised at Beta(2, 1); EM almost always keeps it the high-loss one, but the
  mean is the definition that cannot silently flip).
- `bmm_posterior` evaluates P(noisy | loss) for every loss (not only the kept 5-95% ones), after the
  same normalisation and clipping: pi_n p_n(x) / (pi_0 p_0(x) + pi_1 p_1(x) + 1e-12), then
  (`monotone=True`, the authors' lookup table) every x at or beyond the grid point where the posterior
  peaks (grid of 100 points on [0, 1]) gets at least that peak value, so a heavier right tail of the
  clean component cannot make the largest losses look clean (this fixes the right tail only, as
  the authors' table does); finally clamped to [1e-4, 1 - 1e-4].
  Unlike the authors' code, the posterior is evaluated at x itself, not at x quantised to the
  100-point lookup grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS_NAN = 1e-12


def _as_array(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def beta_logpdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """log Beta(x; a, b) for x in (0, 1)."""
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return (a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - log_beta


def _weighted_lik(x, alphas, betas, weights) -> np.ndarray:
    """(2, n): pi_k Beta(x; a_k, b_k)."""
    return np.stack([weights[k] * np.exp(beta_logpdf(x, alphas[k], betas[k])) for k in range(2)])


def _moments_fit(x: np.ndarray, r: np.ndarray) -> tuple[float, float]:
    """Weighted method of moments for one beta component."""
    m = float(np.sum(r * x) / np.sum(r))
    v = max(float(np.sum(r * (x - m) ** 2) / np.sum(r)), EPS_NAN)  # v = 0 only for constant data
    a = m * (m * (1 - m) / v - 1)
    return a, a * (1 - m) / m


def fit_beta_mixture(x, *, iters: int = 10, alphas=(1.0, 2.0), betas=(2.0, 1.0),
                     weights=(0.5, 0.5)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EM core on data in (0, 1). Returns (alphas, betas, weights), each of shape (2,)."""
    x = np.clip(_as_array(x), 1e-4, 1 - 1e-4)
    a = np.array(alphas, dtype=np.float64)
    b = np.array(betas, dtype=np.float64)
    w = np.array(weights, dtype=np.float64)
    for _ in range(iters):
        r = np.maximum(_weighted_lik(x, a, b, w), EPS_NAN)  # E-step
        r /= r.sum(0)
        for k in range(2):  # M-step
            a[k], b[k] = _moments_fit(x, r[k])
        w = r.sum(1)
        w /= w.sum()
    return a, b, w


@dataclass(frozen=True)
class BMMFit:
    """A fitted two-component beta mixture on normalised losses.

    low, high: the 5th and 95th loss percentiles used to normalise; noisy: index of the high-loss
    component; n_fit: how many losses were inside [low, high] and used by EM."""
    alphas: np.ndarray
    betas: np.ndarray
    weights: np.ndarray
    low: float
    high: float
    noisy: int
    n_fit: int

    @property
    def means(self) -> np.ndarray:
        return self.alphas / (self.alphas + self.betas)

    def normalise(self, losses) -> np.ndarray:
        """Losses to the fit's [1e-3, 1 - 1e-3] scale."""
        x = (_as_array(losses) - self.low) / (self.high - self.low + 1e-6)
        return np.clip(x, 1e-3, 1 - 1e-3)

    def as_dict(self) -> dict:
        return {"alphas": self.alphas.tolist(), "betas": self.betas.tolist(),
                "weights": self.weights.tolist(), "low": self.low, "high": self.high,
                "noisy": self.noisy, "n_fit": self.n_fit}


def fit_bmm(losses, *, iters: int = 10, percentiles: tuple[float, float] = (5.0, 95.0),
            clip: float = 1e-3) -> BMMFit:
    """Arazo's per-epoch fit: trim to the percentile range, normalise with it, clip, run EM."""
    loss = _as_array(losses)
    if loss.size == 0 or not np.all(np.isfinite(loss)):
        raise ValueError("fit_bmm: the losses must be a non-empty array of finite values")
    low, high = (float(v) for v in np.percentile(loss, percentiles))
    kept = loss[(loss >= low) & (loss <= high)]
    x = np.clip((kept - low) / (high - low + 1e-6), clip, 1 - clip)
    a, b, w = fit_beta_mixture(x, iters=iters)
    noisy = int(np.argmax(a / (a + b)))
    return BMMFit(a, b, w, low, high, noisy, int(kept.size))


def bmm_posterior(fit: BMMFit, losses, *, monotone: bool = True, resolution: int = 100,
                  clamp: float = 1e-4) -> np.ndarray:
    """P(noisy component | loss) for each loss, float64, clamped to [clamp, 1 - clamp]."""
    x = fit.normalise(losses)

    def post(v):
        lik = _weighted_lik(v, fit.alphas, fit.betas, fit.weights)
        return lik[fit.noisy] / (lik.sum(0) + EPS_NAN)

    p = post(x)
    if monotone:
        grid = np.clip(np.linspace(0.0, 1.0, resolution), EPS_NAN, 1 - EPS_NAN)
        g = post(grid)
        peak = int(np.argmax(g))
        p = np.where(x >= grid[peak], np.maximum(p, g[peak]), p)
    return np.clip(p, clamp, 1 - clamp)

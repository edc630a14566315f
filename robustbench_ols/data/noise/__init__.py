"""Label noise injected into the training labels.

Specs are written `KIND:ARG`:
- `none`;
- `symmetric:R`: exactly round(R*N) samples, chosen at random, each get a label drawn uniformly from
  the K-1 *other* classes (the OLS paper's definition, after SCE and Arazo et al.);
- `symmetric-all:R`: each label is resampled uniformly over all K classes with probability R (true
  class included, as in the Arazo / PENCIL / DivideMix / MW-Net code), so the wrong-label rate is
  about R(K-1)/K;
- `pairflip:R`: each label of class i becomes i+1 mod K with probability R (Co-teaching);
- `asymmetric:R`: with probability R, CIFAR-10 truck->automobile, bird->airplane, deer->horse,
  cat<->dog; CIFAR-100 each class -> the next class of its superclass;
- `human:NAME`: CIFAR-10N (`aggre`, `random1`, `random2`, `random3`, `worst`) or CIFAR-100N (`noisy`).
- `cifar10n-synthetic:NAME` (`cifar100n-synthetic:noisy`): the synthetic twin of a human label set, as the
  CIFAR-N authors offer it: each label drawn independently from row T[clean] of the transition matrix that the
  set's human labels make over all 50,000 training images (class-dependent noise with the human labels' T, but
  none of their dependence on the image). The record keeps that matrix beside the realised one.

The noisy labels are a function of (dataset, train subset, spec, noise seed) only. Transition matrix
convention: T[i, j] = P(noisy = j | clean = i), rows sum to 1 (cleanlab uses the transpose).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustbench_ols.common.errors import SpecError
from robustbench_ols.data.noise.human import HUMAN_NAMES, load_human_labels

# The synthetic twins of the human label sets and the dataset whose human labels each one copies.
SYNTHETIC_TWINS = {"cifar10n-synthetic": "cifar10", "cifar100n-synthetic": "cifar100"}
# Kinds named by a label set, not a rate: their wrong-label rate is only known from the clean labels.
NAMED_KINDS = ("human", *SYNTHETIC_TWINS)
KINDS = ("none", "symmetric", "symmetric-all", "pairflip", "asymmetric", *NAMED_KINDS)
# CIFAR-10 asymmetric map (Patrini et al. 2017): truck->automobile, bird->airplane, deer->horse,
# cat->dog, dog->cat.
CIFAR10_ASYM = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


@dataclass(frozen=True)
class NoiseSpec:
    kind: str
    rate: float = 0.0  # for the rate kinds
    name: str = ""  # for human

    @classmethod
    def parse(cls, text: str) -> "NoiseSpec":
        kind, _, arg = text.strip().partition(":")
        valid = ("valid: none, symmetric:R, symmetric-all:R, pairflip:R, asymmetric:R (R in [0, 1)), "
                 "human:NAME, cifar10n-synthetic:NAME, cifar100n-synthetic:noisy")
        if kind not in KINDS:
            raise SpecError(f"unknown noise kind {kind!r} in --noise {text!r}; {valid}")
        if kind == "none":
            if arg:
                raise SpecError(f"--noise none takes no argument, got {text!r}")
            return cls("none")
        if kind in NAMED_KINDS:
            if not arg:
                raise SpecError(f"--noise {kind} needs a name (a label set), e.g. {kind}:"
                                f"{'noisy' if kind.startswith('cifar100') else 'worst'}; names: {_human_names()}")
            return cls(kind, name=arg)
        try:
            rate = float(arg)
        except ValueError:
            raise SpecError(f"--noise {text!r}: the rate must be a number R in [0, 1); {valid}") from None
        if not 0 <= rate < 1:
            raise SpecError(f"--noise {text!r}: the rate must be in [0, 1), got {rate}")
        return cls(kind, rate=rate)

    @property
    def named(self) -> bool:
        """A label set's kind (human labels or their synthetic twin): no rate."""
        return self.kind in NAMED_KINDS

    def check_dataset(self, dataset: str) -> None:
        twin_of = SYNTHETIC_TWINS.get(self.kind)
        if twin_of is not None and dataset != twin_of:
            raise SpecError(f"--noise {self}: the synthetic twin of {twin_of}'s human labels applies to {twin_of}, "
                            f"not {dataset}")
        if self.named:
            names = HUMAN_NAMES.get(dataset)
            if names is None:
                raise SpecError(f"--noise human:{self.name}: {dataset} has no human labels; human noise "
                                f"exists for {', '.join(HUMAN_NAMES)}")
            if self.name not in names:
                raise SpecError(f"unknown human label set {self.name!r} for {dataset}; valid: "
                                f"{', '.join(names)}")
        if self.kind == "asymmetric" and dataset not in ("cifar10", "cifar100"):
            raise SpecError(f"--noise asymmetric is defined for cifar10 and cifar100, not {dataset}; "
                            "use symmetric or pairflip")

    def expected_wrong_rate(self, num_classes: int, dataset: str, fine_to_coarse=None) -> float | None:
        """The fraction of wrong labels the spec asks for, on a class-balanced set (what a method
        may be told, e.g. co-teaching's forget rate): R for symmetric and pairflip, R(K-1)/K for
        symmetric-all, R times the fraction of classes that move for asymmetric, None for human
        noise and its synthetic twin (their rate could only be measured with the clean labels)."""
        if self.kind == "none":
            return 0.0
        if self.named:
            return None
        if self.kind == "symmetric-all":
            return self.rate * (num_classes - 1) / num_classes
        if self.kind == "asymmetric":
            target = _flip_map("asymmetric", num_classes, dataset, fine_to_coarse)
            return self.rate * float(np.mean(target != np.arange(num_classes)))
        return self.rate

    def __str__(self) -> str:
        if self.kind == "none":
            return "none"
        # repr keeps every digit: symmetric:0.123456789 must not share a run_id with 0.123457.
        return f"{self.kind}:{self.name}" if self.named else f"{self.kind}:{self.rate!r}"


@dataclass
class NoisyLabels:
    labels: np.ndarray  # int64 (N,), what the methods train on
    is_noisy: np.ndarray  # bool (N,), labels != clean
    T: np.ndarray  # float64 (K, K), realised: T[i, j] = fraction of class-i samples labelled j
    rate: float  # realised fraction of wrong labels
    spec: str
    T_drawn_from: np.ndarray | None = None  # a synthetic twin's: the human labels' T over the whole training set

    def summary(self) -> dict:
        out = {"spec": self.spec, "noise_rate_realised": self.rate, "num_noisy": int(self.is_noisy.sum()),
               "num_samples": len(self.labels), "T": self.T.round(6).tolist()}
        if self.T_drawn_from is not None:
            out["T_drawn_from"] = self.T_drawn_from.round(6).tolist()
        return out


def make_noisy_labels(clean: np.ndarray, num_classes: int, spec, seed: int, *, dataset: str,
                      fine_to_coarse: np.ndarray | None = None,
                      human: np.ndarray | None = None, twin_T: np.ndarray | None = None) -> NoisyLabels:
    """Noisy labels for `clean` (int64, (N,)). `human` holds the human labels of the same samples; `twin_T` the
    transition matrix a synthetic twin draws from (`twin_matrix`)."""
    spec = NoiseSpec.parse(spec) if isinstance(spec, str) else spec
    spec.check_dataset(dataset)
    clean = np.asarray(clean, np.int64)
    n, k = len(clean), num_classes
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x4E4F495345])))
    noisy = clean.copy()
    if spec.kind == "symmetric":
        idx = rng.permutation(n)[:round(spec.rate * n)]
        noisy[idx] = (clean[idx] + rng.integers(1, k, len(idx))) % k  # uniform over the k-1 others
    elif spec.kind == "symmetric-all":
        hit = rng.random(n) < spec.rate
        noisy[hit] = rng.integers(0, k, int(hit.sum()))
    elif spec.kind in ("pairflip", "asymmetric"):
        target = _flip_map(spec.kind, k, dataset, fine_to_coarse)
        hit = rng.random(n) < spec.rate
        noisy[hit] = target[clean[hit]]
    elif spec.kind == "human":
        if human is None or len(human) != n:
            raise SpecError(f"--noise {spec}: human labels for the {n} training samples are needed")
        noisy = np.asarray(human, np.int64).copy()
    elif spec.kind in SYNTHETIC_TWINS:
        if twin_T is None or twin_T.shape != (k, k):
            raise SpecError(f"--noise {spec}: the {k}x{k} transition matrix of the human labels is needed")
        # inverse-CDF draw of one label per sample from row T[clean]; the last edge is 1 whatever the rounding
        edges = np.cumsum(twin_T, axis=1)
        edges[:, -1] = 1.0
        noisy = (rng.random(n)[:, None] >= edges[clean]).sum(1).astype(np.int64)
    is_noisy = noisy != clean
    return NoisyLabels(noisy, is_noisy, transition_matrix(clean, noisy, k), float(is_noisy.mean()), str(spec),
                       T_drawn_from=twin_T if spec.kind in SYNTHETIC_TWINS else None)


def _flip_map(kind: str, k: int, dataset: str, fine_to_coarse) -> np.ndarray:
    target = np.arange(k)
    if kind == "pairflip":
        return (target + 1) % k
    if dataset == "cifar10":
        for src, dst in CIFAR10_ASYM.items():
            target[src] = dst
        return target
    if fine_to_coarse is None:
        raise SpecError("--noise asymmetric on cifar100 needs the superclass of each class")
    for sup in np.unique(fine_to_coarse):
        members = np.flatnonzero(fine_to_coarse == sup)  # ascending class indices
        target[members] = np.roll(members, -1)  # each class -> the next class of its superclass
    return target


def transition_matrix(clean: np.ndarray, noisy: np.ndarray, k: int) -> np.ndarray:
    """Realised T[i, j] = #(clean i, noisy j) / #(clean i); a class with no samples gets the identity row."""
    counts = np.zeros((k, k))
    np.add.at(counts, (clean, noisy), 1)
    rows = counts.sum(1, keepdims=True)
    return np.where(rows > 0, counts / np.maximum(rows, 1), np.eye(k))


def noisy_labels_for(data, indices: np.ndarray, spec: NoiseSpec, seed: int, data_root=None) -> NoisyLabels:
    """Noisy labels of the training samples `indices` of an `ImageData` (`make_noisy_labels` checks
    that `spec` applies to the dataset)."""
    spec.check_dataset(data.name)
    human = twin_T = None
    if spec.named:
        every = load_human_labels(data.name, spec.name, data_root, clean=data.train_y)
        human = every[indices]
        if spec.kind in SYNTHETIC_TWINS:  # the set's T over all training images, as the CIFAR-N authors estimate it
            twin_T = transition_matrix(np.asarray(data.train_y, np.int64), every, data.num_classes)
    return make_noisy_labels(data.train_y[indices], data.num_classes, spec, seed, dataset=data.name,
                             fine_to_coarse=data.fine_to_coarse, human=human if spec.kind == "human" else None,
                             twin_T=twin_T)


def _human_names() -> str:
    return "; ".join(f"{d}: {', '.join(n)}" for d, n in HUMAN_NAMES.items())

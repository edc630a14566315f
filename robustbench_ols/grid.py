"""Grids of runs (methods x noise x seeds x models x datasets) and the presets, among them the OLS
paper's tables and the cpu-regime tier.

A grid is a list of `RunSpec`s plus one `EvalSpec`; it never changes how one run works. A preset, a
TOML config and command-line overrides are layered (preset < config < overrides); `cells()` gives the
validated RunSpecs in the order they run (matrix.py runs them).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import tomllib

from .errors import RbolsError, SpecError
from .methods import parse_method
from .resolved import resolve
from .spec import EvalSpec, RunSpec

SYMMETRIC_0_80 = ["symmetric:0", "symmetric:0.2", "symmetric:0.4", "symmetric:0.6", "symmetric:0.8"]
# The OLS paper's Table VII rows that this suite implements (Ren et al.'s L2RW is not among them).
PAPER_METHODS = ["hard", "bootsoft", "boothard", "sce", "mwnet", "arazo", "pencil", "coteaching", "ls", "ols"]
# The comparison `quick` runs: the paper's methods, MW-Net last (its step costs 8x a hard-label step on a
# CPU; a quick cell about 3x: ~190 s against ~60 s; one seed of the ten methods takes about 67 min on 2 cores).
QUICK_METHODS = ["hard", "ls", "ols", "sce", "bootsoft", "boothard", "coteaching", "pencil", "arazo", "mwnet"]
# The cpu-regime tier: the core comparison, OLS's single-matrix variant and the four noisy-label baselines the
# project's mission names (bootstrapping and MW-Net stay in `quick`: the budget of 6 hours on 2 cores).
CPU_REGIME_METHODS = ["hard", "ls", "ols", "ols-single", "sce", "coteaching", "pencil", "arazo"]
PAPER_RUN = {"epochs": 300}  # batch 128, SGD 0.9 Nesterov, wd 5e-4, lr 0.1, x0.1 at 150/225: the defaults

PRESETS = {
    "smoke": dict(
        about="synthetic data, seconds: for tests and for trying the commands; says nothing about CIFAR",
        datasets=["synthetic"], models=["resnet8"], methods=["hard", "ls", "ols"],
        noise=["symmetric:0", "symmetric:0.4"], seeds=[0],
        run=dict(epochs=2, batch_size=100, train_subset=300, milestones=()),
        eval=dict(attacks=["fgsm", "pgd:steps=2"], attack_examples=50)),
    "quick": dict(
        about="CIFAR-10 at CPU scale: resnet8, 4,000 training images, 10 epochs (lr x0.1 at 5 and 8), "
              "FGSM and PGD-20 on 500 test images; hard, ls, ols, sce, bootsoft, boothard, coteaching, pencil, "
              "arazo and mwnet at five symmetric noise rates; seed 0 unless --seeds says otherwise",
        datasets=["cifar10"], models=["resnet8"], methods=QUICK_METHODS, noise=SYMMETRIC_0_80, seeds=[0],
        run=dict(epochs=10, train_subset=4000),
        eval=dict(attack_examples=500)),
    "cpu-regime": dict(
        about="CIFAR-10 in the memorisation regime on a 2-core CPU: resnet8, 4,000 training images without "
              "augmentation, 28 epochs (lr 0.1, x0.1 at 20 and 25), a test pass every 4 epochs, FGSM and PGD-20 at "
              "8/255 and 2/255 on 500 test images; hard, ls, ols, ols-single, sce, coteaching, pencil and arazo "
              "at five symmetric noise rates, seeds 0 and 1 (hard, ls and ols first)",
        datasets=["cifar10"], models=["resnet8"], methods=CPU_REGIME_METHODS, core=["hard", "ls", "ols"],
        noise=SYMMETRIC_0_80, seeds=[0, 1],
        run=dict(epochs=28, milestones=[20, 25], train_subset=4000, augment=False, test_every=4),
        # the paper's 8/255 drives these small models to ~100% robust error (a floor where every method
        # ties), so 2/255 is scored too (PGD step eps/4)
        eval=dict(attacks=["fgsm", "pgd", "fgsm:eps=2/255", "pgd:eps=2/255,alpha=1/510"], attack_examples=500)),
    "paper-table7": dict(
        about="OLS paper Table VII: CIFAR-100, ResNet-56 (bottleneck), 300 epochs, symmetric noise 0-80%, 3 seeds",
        datasets=["cifar100"], models=["resnet56b"], methods=PAPER_METHODS, noise=SYMMETRIC_0_80,
        seeds=[0, 1, 2], run=PAPER_RUN, eval={}),
    "paper-table8": dict(
        about="OLS paper Table VIII: CIFAR-10, ResNet-29 (bottleneck), clean labels, FGSM and PGD-20",
        datasets=["cifar10"], models=["resnet29b"], methods=["hard", "ls", "ols"], noise=["none"],
        seeds=[0, 1, 2], run=PAPER_RUN, eval={}),
    "paper-table11": dict(
        about="OLS paper Table XI: CIFAR-100, ResNet-56/74/110 (bottleneck), clean labels, error and ECE",
        datasets=["cifar100"], models=["resnet56b", "resnet74b", "resnet110b"], methods=["hard", "ls", "ols"],
        noise=["none"], seeds=[0, 1, 2], run=PAPER_RUN, eval={}),
    "paper-table12": dict(
        about="OLS paper Table XII: CIFAR-10, ResNet-29 (bottleneck), clean labels, CIFAR-10H KL "
              "(the same cells as paper-table8)",
        datasets=["cifar10"], models=["resnet29b"], methods=["hard", "ls", "ols"], noise=["none"],
        seeds=[0, 1, 2], run=PAPER_RUN, eval={}),
}

GRID_KEYS = ("datasets", "models", "methods", "noise", "seeds")
RUN_FIELDS = {f.name for f in dataclasses.fields(RunSpec)} - {"dataset", "model", "method", "method_options",
                                                               "noise", "seed"}
EVAL_FIELDS = {f.name for f in dataclasses.fields(EvalSpec) if f.init}


def split_methods(text: str) -> list[str]:
    """`hard,ols:alpha=0.5,init=zeros,ls` -> [hard, ols:alpha=0.5,init=zeros, ls]: a piece with `=`
    and no `:` is one more option of the method before it."""
    out = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        if "=" in piece and ":" not in piece.split("=", 1)[0] and out:
            out[-1] += "," + piece
        else:
            out.append(piece)
    return out


@dataclass
class Grid:
    datasets: list
    models: list
    methods: list  # method texts, e.g. "ols:alpha=0.5"
    noise: list
    seeds: list
    run: dict = field(default_factory=dict)  # RunSpec fields shared by every cell
    eval: dict = field(default_factory=dict)  # EvalSpec fields
    name: str = "custom"
    about: str = ""
    # Methods whose cells run first, over every seed and noise rate, before the other methods' cells: a
    # partial grid then already holds the core comparison (empty: seed by seed, as below).
    core: list = field(default_factory=list)

    @classmethod
    def build(cls, preset: str | None = None, config: dict | None = None, **overrides) -> "Grid":
        """preset < config (a TOML document as a dict) < overrides; each may hold the grid keys, `run`
        and `eval` tables."""
        layers = []
        if preset is not None:
            if preset not in PRESETS:
                raise SpecError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
            layers.append(PRESETS[preset])
        if config:
            if "preset" in config and preset is None:
                return cls.build(config["preset"], {k: v for k, v in config.items() if k != "preset"}, **overrides)
            layers.append(config)
        layers.append(overrides)
        g = {"run": {}, "eval": {}, "name": preset or "custom", "about": ""}
        for layer in layers:
            for k, v in layer.items():
                if v is None:
                    continue
                if k in ("run", "eval"):
                    g[k] = {**g[k], **v}
                elif k in GRID_KEYS or k in ("about", "name", "core"):
                    g[k] = v
                else:
                    raise SpecError(f"unknown grid key {k!r}; valid: {', '.join(GRID_KEYS)}, run, eval, preset")
        if not isinstance(g.get("core", []), list):
            raise SpecError(f"grid key core must be a list of method texts, got {g['core']!r}")
        missing = [k for k in GRID_KEYS if not g.get(k)]
        if missing:
            raise SpecError(f"the grid has no {', '.join(missing)}: give --{missing[0]} (or a --preset, or "
                            f"--config with {missing[0]} = [...])")
        bad = sorted(set(g["run"]) - RUN_FIELDS) + sorted(set(g["eval"]) - EVAL_FIELDS)
        if bad:
            raise SpecError(f"unknown run/eval setting {bad[0]!r}; run settings: {', '.join(sorted(RUN_FIELDS))}; "
                            f"eval settings: {', '.join(sorted(EVAL_FIELDS))}")
        return cls(**g)

    def eval_spec(self) -> EvalSpec:
        kw = dict(self.eval)
        if "attacks" in kw:
            kw["attacks"] = tuple(a for a in kw["attacks"] if a != "none")
        return EvalSpec(**kw)

    def cells(self) -> list[RunSpec]:
        """Every cell's RunSpec, validated, in the order they run: dataset, model, seed, noise, method
        (so a whole seed is finished before the next begins), the `core` methods' cells before the others."""
        out, seen = [], set()
        run = dict(self.run)
        if "milestones" in run and run["milestones"] is not None:
            run["milestones"] = tuple(run["milestones"])
        for dataset in self.datasets:
            for model in self.models:
                for seed in self.seeds:
                    for noise in self.noise:
                        for text in self.methods:
                            name, raw = parse_method(text)
                            kw = {"noise_seed": int(seed), **run}
                            try:
                                spec = RunSpec(dataset=dataset, model=model, method=name,
                                               method_options=tuple(raw.items()), noise=noise, seed=int(seed), **kw)
                                resolve(spec)  # every name and option value, before any cell runs
                            except RbolsError as e:
                                raise type(e)(f"grid cell {dataset}/{model}/{text}/{noise}/seed {seed}: {e}") from None
                            if spec.run_id not in seen:
                                seen.add(spec.run_id)
                                out.append((text not in self.core, spec))
        return [spec for _, spec in sorted(out, key=lambda c: c[0])]  # stable: the order above within each part


def load_config(path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise SpecError(f"--config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"--config {path} is not valid TOML: {e}") from None

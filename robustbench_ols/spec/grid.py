"""Grids of runs (methods x noise x seeds x models x datasets), built from a preset (presets.py), a TOML
file and command-line overrides.

A grid is a list of `RunSpec`s plus one `EvalSpec`; it never changes how one run works. A preset, a
TOML config and command-line overrides are layered (preset < config < overrides); `cells()` gives the
validated RunSpecs in the order they run (executors/ runs them).
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import tomllib

from robustbench_ols.common.errors import RbolsError, SpecError
from robustbench_ols.common.values import parse_bool
from robustbench_ols.methods import parse_method
from robustbench_ols.spec import EvalSpec, RunSpec
from robustbench_ols.spec.presets import CELL_SECONDS, PRESETS
from robustbench_ols.spec.resolve import check

GRID_KEYS = ("datasets", "models", "methods", "noise", "seeds")
RUN_FIELDS = {f.name for f in dataclasses.fields(RunSpec) if f.init} - {"dataset", "model", "method", "method_options",
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
    # Run settings swept over: RunSpec field -> its values; every combination is a cell (innermost axis).
    sweep: dict = field(default_factory=dict)

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
        g = {"run": {}, "eval": {}, "sweep": {}, "name": preset or "custom", "about": ""}
        for layer in layers:
            for k, v in layer.items():
                if v is None:
                    continue
                if k in ("run", "eval", "sweep"):
                    g[k] = {**g[k], **v}
                elif k in GRID_KEYS or k in ("about", "name", "core"):
                    g[k] = v
                else:
                    raise SpecError(f"unknown grid key {k!r}; valid: {', '.join(GRID_KEYS)}, run, eval, sweep, preset")
        if not isinstance(g.get("core", []), list):
            raise SpecError(f"grid key core must be a list of method texts, got {g['core']!r}")
        missing = [k for k in GRID_KEYS if not g.get(k)]
        if missing:
            raise SpecError(f"the grid has no {', '.join(missing)}: give --{missing[0]} (or a --preset, or "
                            f"--config with {missing[0]} = [...])")
        for k, values in g["sweep"].items():
            if k not in RUN_FIELDS:
                raise SpecError(f"sweep {k!r}: not a run setting; sweepable: {', '.join(sorted(RUN_FIELDS))} (methods, "
                                "noise, seeds, models and datasets are the grid's own axes)")
            if not isinstance(values, list) or not values:
                raise SpecError(f"sweep {k!r}: give a non-empty list of values, e.g. {k} = [...], got {values!r}")
        bad = sorted(set(g["run"]) - RUN_FIELDS) + sorted(set(g["eval"]) - EVAL_FIELDS)
        if bad:
            raise SpecError(f"unknown run/eval setting {bad[0]!r}; run settings: {', '.join(sorted(RUN_FIELDS))}; "
                            f"eval settings: {', '.join(sorted(EVAL_FIELDS))}")
        return cls(**g)

    def measured_cell_seconds(self) -> dict:
        """CELL_SECONDS of the preset by method label, when the grid keeps the preset's dataset, model and run
        settings (else {}: an override such as --epochs makes them wrong)."""
        p = PRESETS.get(self.name)
        if (p is None or self.name not in CELL_SECONDS or self.datasets != p["datasets"]
                or self.models != p["models"] or self.run != p["run"] or self.sweep):
            return {}
        return CELL_SECONDS[self.name]

    def eval_spec(self) -> EvalSpec:
        kw = dict(self.eval)
        if "attacks" in kw:
            kw["attacks"] = tuple(a for a in kw["attacks"] if a != "none")
        return EvalSpec(**kw)

    def cells(self) -> list[RunSpec]:
        """Every cell's RunSpec, validated, in the order they run: dataset, model, seed, noise, method
        (so a whole seed is finished before the next begins), the `core` methods' cells before the others."""
        out, seen = [], set()
        keys = list(self.sweep)
        settings = [_milestones_tuple({**self.run, **dict(zip(keys, combo))})
                    for combo in itertools.product(*self.sweep.values())]
        for dataset in self.datasets:
            for model in self.models:
                for seed in self.seeds:
                    for noise in self.noise:
                        for text in self.methods:
                            name, raw = parse_method(text)
                            for run in settings:
                                kw = {"noise_seed": int(seed), **run}
                                try:
                                    spec = RunSpec(dataset=dataset, model=model, method=name,
                                                   method_options=tuple(raw.items()), noise=noise, seed=int(seed),
                                                   **kw)
                                    check(spec)  # every name and value, before any cell runs
                                except (RbolsError, TypeError) as e:  # TypeError: a TOML value of the wrong type
                                    swept = "".join(f"/{k}={run[k]}" for k in keys)
                                    raise (type(e) if isinstance(e, RbolsError) else SpecError)(
                                        f"grid cell {dataset}/{model}/{text}/{noise}/seed {seed}{swept}: {e}") from None
                                if spec.run_id not in seen:
                                    seen.add(spec.run_id)
                                    out.append((text not in self.core, spec))
        return [spec for _, spec in sorted(out, key=lambda c: c[0])]  # stable: the order above within each part


def _milestones_tuple(run: dict) -> dict:
    if run.get("milestones") is not None:
        run["milestones"] = tuple(run["milestones"])
    return run


def parse_sweeps(texts) -> dict:
    """`--sweep KEY=V1,V2` options -> {key: [values]}, each value converted to the type of the RunSpec field
    (int, float, bool: true/false, str). Milestones (a list each) are swept in the TOML file's [sweep] table."""
    types = {f.name: type(f.default) for f in dataclasses.fields(RunSpec) if f.init}
    out = {}
    for text in texts or ():
        key, sep, values = text.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values.strip():
            raise SpecError(f"--sweep {text!r}: give KEY=V1,V2,..., e.g. --sweep lr=0.05,0.1")
        if key not in RUN_FIELDS:
            raise SpecError(f"--sweep {text!r}: {key!r} is not a run setting; sweepable: {', '.join(sorted(RUN_FIELDS))}")
        if key == "milestones":
            raise SpecError("--sweep milestones: each value is a list; sweep it in a --config file: "
                            "[sweep] milestones = [[20, 25], [40, 50]]")
        out[key] = [_convert(v.strip(), types[key], text) for v in values.split(",") if v.strip()]
    return out


def _convert(value: str, kind: type, text: str):
    try:
        return parse_bool(value) if kind is bool else kind(value)
    except ValueError:
        raise SpecError(f"--sweep {text!r}: {value!r} is not a {kind.__name__}") from None


def load_config(path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise SpecError(f"--config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"--config {path} is not valid TOML: {e}") from None

"""What a tracker is given of a run: its spec as flat hyper-parameters, an epochs.csv row's figures, the learning
curves drawn as a figure, and the record files logged as artifacts."""
from __future__ import annotations

import math
import numbers
from pathlib import Path

PROJECT = "robustbench_ols"  # MLflow experiment and W&B project
RUN_TAG = "rbols.run_id"
RECORDS = ("spec.json", "epochs.csv", "metrics.json", "reliability.csv")  # logged as artifacts when present
_LOSSES = ("train_loss", "test_loss", "val_loss")
_RATES = ("train_err", "noisy_err", "clean_subset_err", "test_err", "val_err", "noisy_true_acc")


def hyperparams(spec: dict) -> dict:
    """A run's spec (spec.json's "spec", or RunSpec.to_dict()) as flat hyper-parameters: nested dicts as dotted
    keys (method_options.alpha), lists and tuples as comma-separated text, None as "None", empty dicts as "";
    numbers, booleans and strings as they are."""
    out = {}

    def put(key, v):
        if isinstance(v, dict):
            if not v and key:
                out[key] = ""
            for k, x in v.items():
                put(f"{key}.{k}" if key else str(k), x)
        elif isinstance(v, (list, tuple)):
            out[key] = ",".join(str(x) for x in v)
        elif v is None:
            out[key] = "None"
        else:
            out[key] = v
    put("", spec)
    return out


def number(v) -> float | None:
    """`v` as a float when it is a finite number (booleans as 0 or 1), else None."""
    if isinstance(v, numbers.Real) and math.isfinite(v):
        return float(v)
    return None


def epoch_values(row: dict) -> dict:
    """The figures of one epochs.csv row that a tracker logs: every numeric column but `epoch` (the step);
    empty cells (no test pass that epoch, no validation split) are left out."""
    return {k: x for k, v in row.items() if k != "epoch" and (x := number(v)) is not None}


def learning_curves(rows: list[dict], path, title: str = "") -> Path:
    """A small PNG of one run's epochs.csv: the losses (left) and the error rates (right) per epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # pyplot's global state is never touched
    from matplotlib.ticker import MaxNLocator
    fig = Figure(figsize=(8, 3), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, columns, label in zip(fig.subplots(1, 2), (_LOSSES, _RATES), ("loss", "rate")):
        for c in columns:
            pts = [(r["epoch"], x) for r in rows if (x := number(r.get(c))) is not None]
            if pts:  # a sparse curve (--test-every) gets markers
                ax.plot(*zip(*pts), marker="." if len(pts) < len(rows) else None, label=c)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if ax.lines:
            ax.legend(fontsize="x-small")
    if title:
        fig.suptitle(title, fontsize="small")
    path = Path(path)
    fig.savefig(path, dpi=90)
    return path

"""The OLS paper's published numbers (Zhang et al., "Delving Deep into Label Smoothing", IEEE TIP 2021;
`../papers/001_530b39ece6a5790b.txt`), as plain data, so a report can show them beside ours.

Units are the paper's: top-1 error in percent; Table XI's ECE in percent too (the paper prints
"11.37" for the hard-label ResNet-56: ECE x 100); Table XII's KL divergence as printed (nats, mean over
the CIFAR-10H test images each model classifies correctly). Our metrics.json holds fractions in [0, 1],
so `PaperFigure.scale` says what to multiply ours by before comparing.

Method names are this package's registry names; a paper row is matched to our runs only when the
method runs with its default options (`method_label == method`). The ResNet depths 29/56/74/110 are
the bottleneck CIFAR ResNets (`resnet29b`, `resnet56b`, ...; see REFERENCE.md, "Protocols").
Ren et al. [46] (learning to reweight) has no registered method here; it is kept under "l2rw" so the
number is at hand should one be added. The paper's Table VIII and XII give one number per method (no
runs count, no std); Table VII and XI give mean ± std of three runs.
"""
from __future__ import annotations

from dataclasses import dataclass

# Common protocol of the CIFAR tables (paper Sec. V-A, REFERENCE.md): 300 epochs on the whole
# training set, batch 128, SGD lr 0.1 decayed x0.1 at epochs 150 and 225.
PAPER_EPOCHS = 300

# Table VII: CIFAR-100, ResNet-56, symmetric noise (a fixed number of labels flipped uniformly to a
# wrong class, our `symmetric:R`, not `symmetric-all`); top-1 test error (%), mean ± std of 3 runs.
# {method: {noise rate: (mean, std)}}
TABLE7 = {
    "hard":       {0.0: (26.81, 0.36), 0.2: (37.75, 0.50), 0.4: (47.07, 1.08), 0.6: (62.06, 0.62), 0.8: (81.56, 0.42)},
    "bootsoft":   {0.0: (27.28, 0.35), 0.2: (37.99, 0.43), 0.4: (46.96, 0.33), 0.6: (63.76, 0.85), 0.8: (80.32, 0.33)},
    "boothard":   {0.0: (26.02, 0.22), 0.2: (36.21, 0.29), 0.4: (42.73, 0.16), 0.6: (54.95, 2.20), 0.8: (81.20, 1.26)},
    "sce":        {0.0: (28.97, 0.31), 0.2: (38.40, 0.12), 0.4: (46.97, 0.65), 0.6: (62.13, 0.55), 0.8: (82.66, 0.10)},
    "l2rw":       {0.0: (38.38, 0.35), 0.2: (43.74, 1.21), 0.4: (49.83, 0.53), 0.6: (57.65, 0.98), 0.8: (73.04, 0.15)},
    "mwnet":      {0.0: (29.51, 0.51), 0.2: (35.06, 0.48), 0.4: (43.58, 0.93), 0.6: (56.15, 0.60), 0.8: (87.25, 0.22)},
    "arazo":      {0.0: (33.80, 0.10), 0.2: (33.91, 0.38), 0.4: (40.87, 1.49), 0.6: (52.91, 1.81), 0.8: (83.92, 0.19)},
    "pencil":     {0.0: (29.36, 0.35), 0.2: (36.33, 0.15), 0.4: (43.55, 0.08), 0.6: (57.49, 1.05), 0.8: (79.24, 0.11)},
    "coteaching": {0.0: (32.07, 0.36), 0.2: (35.08, 0.19), 0.4: (44.39, 0.23), 0.6: (62.50, 0.61), 0.8: (80.39, 0.16)},
    "ls":         {0.0: (26.37, 0.41), 0.2: (35.48, 0.61), 0.4: (43.99, 1.04), 0.6: (59.51, 0.80), 0.8: (80.36, 0.90)},
    "ols":        {0.0: (25.24, 0.18), 0.2: (32.67, 0.14), 0.4: (38.86, 0.13), 0.6: (50.04, 0.14), 0.8: (78.22, 1.01)},
}

# Table VIII: CIFAR-10, ResNet-29, clean labels; top-1 error (%) on clean test images, under FGSM and
# under PGD with 20 iterations (L-inf bound "8", i.e. 8/255 in pixel units; our fgsm_err and pgd20_err
# at the default 8/255). One number per method. {method: (clean, fgsm, pgd20)}
TABLE8 = {
    "hard":     (7.18, 82.46, 93.18),
    "bootsoft": (6.91, 79.83, 92.57),
    "boothard": (7.73, 82.68, 90.01),
    "sce":      (8.66, 77.68, 93.96),
    "ls":       (6.81, 79.48, 87.32),
    "ols":      (6.46, 60.39, 76.29),
}

# Table XI: CIFAR-100 (clean labels), ResNet-56/74/110; top-1 error (%) and ECE (x 100), mean ± std of
# 3 runs. (The ResNet-56 errors repeat Table VII's 0% column.) {model: {method: ((err, std), (ece, std))}}
TABLE11 = {
    "resnet56b": {"hard": ((26.81, 0.36), (11.37, 0.53)), "ls": ((26.37, 0.41), (3.35, 0.86)),
                  "ols": ((25.24, 0.18), (2.85, 1.44))},
    "resnet74b": {"hard": ((25.86, 0.19), (12.70, 0.76)), "ls": ((25.90, 0.31), (2.37, 0.94)),
                  "ols": ((24.89, 0.08), (1.81, 0.85))},
    "resnet110b": {"hard": ((25.54, 0.44), (13.14, 1.16)), "ls": ((25.14, 0.31), (2.32, 1.03)),
                   "ols": ((23.86, 0.27), (2.05, 0.68))},
}

# Table XII: CIFAR-10, ResNet-29, clean labels; top-1 error (%) (the same numbers as Table VIII) and the
# mean KL(human || model) on CIFAR-10H over the correctly classified test images (our c10h_kl_correct).
# {method: (err, kl)}
TABLE12 = {
    "hard":     (7.18, 0.2974),
    "bootsoft": (6.91, 0.3247),
    "boothard": (7.73, 0.3188),
    "sce":      (8.66, 0.5563),
    "ls":       (6.81, 0.1866),
    "ols":      (6.46, 0.1399),
}

PROTOCOLS = {
    "table7": "CIFAR-100, ResNet-56 (bottleneck), symmetric noise, 300 epochs on all 50,000 training "
              "images, mean ± std of 3 runs",
    "table8": "CIFAR-10, ResNet-29 (bottleneck), clean labels, 300 epochs on all 50,000 training images, "
              "FGSM and PGD-20 at 8/255 on the whole test set, one number per method",
    "table11": "CIFAR-100, clean labels, 300 epochs on all 50,000 training images, mean ± std of 3 runs",
    "table12": "CIFAR-10, ResNet-29 (bottleneck), clean labels, 300 epochs on all 50,000 training images, "
               "one number per method",
}


@dataclass(frozen=True)
class PaperFigure:
    value: float  # in the paper's units
    std: float | None  # None where the paper gives one number
    scale: float  # multiply our metric (a fraction) by this to get the paper's units
    table: str
    protocol: str


def is_default(method: str, label: str) -> bool:
    """Whether `label` (a run's method label) names `method` with its default options: the label lists
    every option that differs from its default, so only the bare name is the default."""
    return label == method


def _clean(row) -> bool:
    return _rate(row) == 0.0 and row["noise_kind"] in ("none", "symmetric")


def _rate(row) -> float | None:
    try:
        return round(float(row["noise_rate"]), 6)
    except (TypeError, ValueError):
        return None


def match(table: str, row, metric: str) -> PaperFigure | None:
    """The paper's number for `metric` in the setting of `row` (dataset, model, method, method_label,
    noise_kind, noise_rate: a row of `results.collect` or a cell of a report table), or None where
    the paper reports none for that setting. Dataset, method (default options) and noise must match; the
    model must match for Table XI only (its rows are models): Tables VII, VIII and XII each used one
    model, and a CPU-scale run with another model still wants the paper's figure beside its own, labelled
    with the paper's protocol (`PaperFigure.protocol`: model, epochs, training set) so the report can say
    what differs."""
    method = row.get("method", row.get("method_label"))
    if not is_default(method, row.get("method_label", method)):  # other options: not the paper's row
        return None
    ds, model, proto = row.get("dataset"), row.get("model"), PROTOCOLS.get(table, "")
    if table == "table7" and metric in ("test_err_last", "test_err_best", "test_err_noisy_val", "test_err_oracle"):
        if ds != "cifar100" or row.get("noise_kind") not in ("none", "symmetric"):
            return None
        cell = TABLE7.get(method, {}).get(_rate(row))
        return PaperFigure(*cell, 100.0, table, proto) if cell else None
    if table == "table8" and ds == "cifar10" and _clean(row) and method in TABLE8:
        i = {"clean_err": 0, "fgsm_err": 1, "pgd20_err": 2}.get(metric)
        return None if i is None else PaperFigure(TABLE8[method][i], None, 100.0, table, proto)
    if table == "table11" and ds == "cifar100" and _clean(row):
        cell = TABLE11.get(model, {}).get(method)
        i = {"clean_err": 0, "ece": 1}.get(metric)
        return None if cell is None or i is None else PaperFigure(*cell[i], 100.0, table, proto)
    if table == "table12" and ds == "cifar10" and _clean(row) and method in TABLE12:
        i, scale = {"clean_err": (0, 100.0), "c10h_kl_correct": (1, 1.0)}.get(metric, (None, None))
        return None if i is None else PaperFigure(TABLE12[method][i], None, scale, table, proto)
    return None

"""The per-run rows behind the cpu-regime page's section on the methods added by issue 28 (generalized label
smoothing, ELR) and on CIFAR-10N's synthetic twin, read from the run records at the preset's scoring:

    python docs/results/added_tables.py RESULTS_DIR DOCS_DIR    # writes DOCS_DIR/added-methods.csv, cifar10n-twin.csv

added-methods.csv: hard, ls, ols, gls (rate -0.2; and after 20 epochs of CE: gls:warmup=20), gls:rate=0.2 and elr at
the symmetric noise rates, pilot seeds 0
and 1 only (every method on the same seeds). cifar10n-twin.csv: hard, ls and ols on CIFAR-10N's worst human labels
and on their synthetic twin (`cifar10n-synthetic:worst`), with each run's realised noise rate. One row per run, so
every mean in the section is recomputable from the committed file.
"""
from __future__ import annotations

import sys
from pathlib import Path

from robustbench_ols.store.results import collect

EVAL_ID = "5941e1bbdfab"  # the cpu-regime preset's scoring (publish_tier.sh)
METHODS = ["hard", "ls", "ols", "gls", "gls:warmup=20", "gls:rate=0.2", "elr"]
TWIN = ["human:worst", "cifar10n-synthetic:worst"]
COLUMNS = ["method_label", "noise", "noise_rate", "noise_rate_realised", "seed", "run_id", "test_err_last",
           "wrong_fit", "ece", "c10h_kl_correct", "worst_eps1_err"]


def main(results: str, docs: str) -> None:
    d = collect(results, eval_id=EVAL_ID)
    d = d[d.seed.isin([0, 1])].assign(wrong_fit=lambda x: 1 - x.noisy_err_last)
    added = d[d.method_label.isin(METHODS) & (d.noise_kind == "symmetric")]
    twin = d[d.method_label.isin(METHODS[:3]) & d.noise.isin(TWIN)]
    for frame, name in ((added, "added-methods.csv"), (twin, "cifar10n-twin.csv")):
        frame = frame.sort_values(["method_label", "noise", "seed"])[COLUMNS]
        frame.to_csv(Path(docs) / name, index=False, float_format="%.10g")
        print(f"{name}: {len(frame)} runs")


if __name__ == "__main__":
    main(*sys.argv[1:3])

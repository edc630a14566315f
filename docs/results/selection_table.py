"""Per run of a grid trained with --noisy-val, the epoch and test error each checkpoint selection chooses (from
each run's epochs.csv, through results.collect), and the noisy-validation error there:

    python docs/results/selection_table.py results/noisy-val > docs/results/noisy-val/selection.csv
"""
from __future__ import annotations

import sys

from robustbench_ols.store.results import collect


def main(argv: list[str]) -> int:
    runs = collect(argv[0])
    cols = ["run_id", "method_label", "noise_rate", "seed", "num_train", "num_val", "epochs", "test_err_last", "epoch_noisy_val",
            "test_err_noisy_val", "epoch_oracle", "test_err_oracle", "noisy_err_last", "noisy_err_noisy_val"]
    runs[cols].sort_values(["method_label", "seed"]).to_csv(sys.stdout, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

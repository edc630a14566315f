"""The report's four tables of the OLS paper (VII, VIII, XI, XII) as sections, and robustness.csv."""
from __future__ import annotations

import pandas as pd

from robustbench_ols.attacks import AttackSpec
from robustbench_ols.common.markdown import markdown_table
from robustbench_ols.report.figures import sweep_columns
from robustbench_ols.report.table7 import table7_parts
from robustbench_ols.report.tables import SETTING, attack_columns, metric_parts


def table_parts(d: pd.DataFrame, paper: bool, select: str = "last") -> list[tuple[str, str, list, pd.DataFrame]]:
    """(file stem, title, body, CSV frame) of Tables VII, VIII, XI and XII, the body as parts: Markdown text
    and DataFrames of the cells as shown (the HTML page renders the same parts). `select`: the checkpoint
    selection the report uses (Table VII's first table; the scores are of that epoch's model)."""
    err = "clean_err" if "clean_err" in d and d["clean_err"].notna().any() else "test_err_last"
    cells = ("noise_col", "method_label")
    model = "final model (last epoch)" if select == "last" else f"model of the epoch `--select {select}` chooses"
    out = []
    body, csv = table7_parts(d, paper=paper, select=select)
    out.append(("table7", "Table VII: test error under label noise", [
        "Top-1 test error (%), mean ± std over seeds (ddof=1), rows = methods, columns = noise rates, at the "
        f"epoch each checkpoint selection chooses: first the one this report uses (`--select {select}`), then "
        "the others the runs allow; only epochs with a test pass compete (selection.py).\n\n", *body], csv))
    attacks = [(c, AttackSpec.from_key(c).label, 100.0, 2)
               for c in attack_columns(d) or ["fgsm_err", "pgd20_err"]]  # absent ones are said so
    body, csv = metric_parts(d, "table8", [(err, "clean", 100.0, 2), *attacks], SETTING, cells, paper)
    out.append(("table8", "Table VIII: clean and adversarial error", [
        f"Top-1 error (%) of the {model} on clean test images (`{err}`) and under each "
        "attack on the attack subset (its size is listed as attack examples), at 8/255 unless the column "
        "names another budget. PGD-20 is the paper's; AutoAttack is the official standard ensemble (APGD-CE, "
        "APGD-T, FAB-T, Square); *Worst case* counts an image as fooled when any attack at that budget "
        "fooled it (from the per-image outcomes). Every run's figures: [robustness.csv](robustness.csv).\n\n",
        *body, masking_markdown(d)], csv))
    ece = [("ece", "ECE", 100.0, 2)] + [(k, label, 100.0, 2) for k, label in CALIBRATION_COLUMNS
                                        if k in d and d[k].notna().any()]
    body, csv = metric_parts(d, "table11", [(err, "error", 100.0, 2), *ece],
                             [c for c in SETTING if c != "model"], ("noise_col", "model", "method_label"), paper)
    out.append(("table11", "Table XI: error and calibration", [
        f"Top-1 error (%, `{err}`) and ECE (x 100; 15 equal-width bins unless the runs' evaluation said "
        f"otherwise) of the {model}, per model and method; where the runs recorded them, "
        "the adaptive ECE (equal-mass bins), Kumar et al.'s debiased L2 ECE, the smooth ECE (relplot), the "
        "area under the risk-coverage curve (AURC, x 100, lower is better), and each after temperature "
        "scaling (runs with a validation split); selective prediction (x 100): AUGRC (Traub et al. 2024), "
        "AURC and AUGRC by the logit-normalised score (Xia et al. 2025), coverage at 5% risk (higher is better) "
        "and risk at 80% coverage.\n\n", *body], csv))
    c10 = d[d["dataset"] == "cifar10"]
    if c10.empty or "c10h_kl_correct" not in c10 or c10["c10h_kl_correct"].isna().all():
        body, csv = ["No CIFAR-10 runs with CIFAR-10H figures in these results: Table XII is empty "
                     "(it exists for CIFAR-10 only).\n"], pd.DataFrame()
    else:
        kl = [(c, lab, 1.0, 4) for c, lab in (("c10h_kl_correct", "KL (correct)"), ("c10h_kl_all", "KL (all)"))]
        body, csv = metric_parts(c10, "table12", [(err, "error", 100.0, 2), *kl, ("c10h_agree", "agree (%)", 100.0, 2)],
                                 SETTING, cells, paper)
    out.append(("table12", "Table XII: agreement with CIFAR-10H", [
        f"Top-1 error (%, `{err}`) and mean KL(human ‖ model) on CIFAR-10H over the test images the model "
        "classifies correctly (the paper's figure), over all images, and top-1 agreement with the human "
        f"majority; the {model}; CIFAR-10 only.\n\n", *body], csv))
    return out


# Table XI's calibration columns beyond the paper's ECE, shown where the runs recorded them.
CALIBRATION_COLUMNS = (("ece_ts", "ECE (temp. scaled)"), ("aece", "adaptive ECE"), ("ece_debiased", "debiased ECE"),
                       ("smece", "smooth ECE"), ("smece_ts", "smooth ECE (temp. scaled)"), ("aurc", "AURC"),
                       ("aurc_ts", "AURC (temp. scaled)"), ("augrc", "AUGRC"), ("aurc_ln", "AURC (logit norm)"),
                       ("augrc_ln", "AUGRC (logit norm)"), ("cov_at_5risk", "coverage at 5% risk"),
                       ("risk_at_80cov", "risk at 80% coverage"))


def masking_markdown(d: pd.DataFrame) -> str:
    """The gradient-masking checks of the scored runs: which were flagged, with the checks that failed."""
    if "masking_suspected" not in d or d["masking_suspected"].isna().all():
        return ("\nGradient-masking checks: none recorded for these runs (scored before the checks existed, or "
                "with `--no-checks`): `rbols eval` with the default `--checks` adds them.\n")
    checked = d[d["masking_suspected"].notna()]
    flagged = checked[checked["masking_suspected"].astype(bool)]
    head = (f"\nGradient-masking checks (attacks/sanity.py; eps 0, the eps sweep, 64/255, PGD-100 with restarts, "
            f"Square, zero gradients; and, where the run's hard-label surrogate exists, the transfer check of "
            f"attacks/transfer.py) ran for {len(checked)} of {len(d)} runs on "
            f"{', '.join(str(int(n)) for n in sorted(checked['check_examples'].dropna().unique()))} images each: ")
    if flagged.empty:
        return head + "no run was flagged.\n"
    rows = [[r["method_label"], r["noise_col"], str(r["seed"]), r["masking_checks"]]
            for _, r in flagged.sort_values(["method_label", "noise_col", "seed"]).iterrows()]
    return head + f"{len(flagged)} flagged (masking suspected: their robust errors may overstate robustness).\n\n" \
        + markdown_table(["method", "noise", "seed", "failed checks"], rows)


ROBUSTNESS_COLUMNS = ["run_id", "method_label", "noise_col", "noise_rate", "seed", "clean_err", "attack_examples",
                      "check_examples", "masking_suspected", "masking_checks", "check_zero_grad", "check_square_only",
                      "check_pgd100_restarts_err"]


def robustness_frame(d: pd.DataFrame) -> pd.DataFrame:
    """robustness.csv: one row per run with an attack figure: its robust errors under every attack (and
    the worst case), the transfer check's errors and surrogate, the gradient-masking checks' flag and figures
    and the eps sweep where recorded."""
    attacks = attack_columns(d)
    transfer = sorted(c for c in d if c.startswith("transfer_") and c.endswith("_err")) + \
        [c for c in ("transfer_surrogate", "transfer_failed_budgets") if c in d]
    cols = [c for c in ROBUSTNESS_COLUMNS if c in d] + attacks + transfer + [c for _, c in sweep_columns(d)]
    if not attacks:
        return pd.DataFrame(columns=cols)
    return d[d[attacks].notna().any(axis=1)][cols].sort_values(["method_label", "noise_rate", "seed"])

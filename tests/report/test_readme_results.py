"""The generated results sections (the results pages docs/results/cpu-regime.md and docs/results/quick.md, and
the README's summary table) are what docs/results/build_readme.py makes of the committed report files: no
number in them is typed by hand, and a changed report file changes them."""
import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
# what the builder reads and writes: the README (its summary) and docs/results (the report files and the pages)
COPIED = ("README.md", "docs/results")


def _copy(to: Path) -> None:
    """A copy of what the builder reads and writes (less the run archives, which it never opens)."""
    for p in COPIED:
        src = ROOT / p
        if src.is_dir():
            shutil.copytree(src, to / p, ignore=shutil.ignore_patterns("*.tar.xz"))
        else:
            (to / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, to / p)


def _builder(root: Path):
    spec = importlib.util.spec_from_file_location("build_readme", root / "docs/results/build_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.ROOT = root
    return mod


def test_readme_results_section_equals_the_report_files():
    b = _builder(ROOT)
    assert b.main(["--check"]) == 0, "a generated results section is stale: python docs/results/build_readme.py"


def test_the_section_follows_the_files(tmp_path):
    """Change one figure of table7.csv in a copy: the section says the new figure, --check fails."""
    _copy(tmp_path)
    b = _builder(tmp_path)
    t7 = pd.read_csv(tmp_path / "docs/results/quick/table7.csv")
    i = t7.index[(t7["which"] == "last") & (t7["method_label"] == "ols")][0]
    before = f"{t7.loc[i, 'mean'] * 100:.1f} ± {t7.loc[i, 'std'] * 100:.1f}"
    assert before in b.section()
    t7.loc[i, "mean"] = 0.1234
    t7.to_csv(tmp_path / "docs/results/quick/table7.csv", index=False)
    assert f"12.3 ± {t7.loc[i, 'std'] * 100:.1f}" in b.section()
    assert b.main(["--check"]) == 1
    assert b.main([]) == 0 and b.main(["--check"]) == 0


NAN = float("nan")


def test_claim_verdicts_follow_the_tests():
    b = _builder(ROOT)
    row = dict(metric="ece", scope="all", baseline="hard", rates="0 0.4 0.8", regime="ok", n=6, mean_diff=0.05,
               std_diff=0.01, min_diff=0.04, max_diff=0.07, lower=0, p=0.001, p_adj=0.002, ci_lo=0.04, ci_hi=0.06,
               margin=0.005, seeds_needed=NAN, outcome="worse")
    pooled = pd.DataFrame([row, {**row, "baseline": "ls", "mean_diff": -0.01, "min_diff": -0.03, "max_diff": 0.02,
                                 "lower": 4, "p": 0.4, "p_adj": 0.4, "ci_lo": -0.03, "ci_hi": 0.01,
                                 "seeds_needed": 12, "outcome": "inconclusive"},
                          {**row, "baseline": "hard", "scope": "noisy", "outcome": "equivalent"}])
    # the spread is read over the claim's rates only: the row at 20% (not pooled) must not count
    per_rate = pd.DataFrame([{"metric": "ece", "baseline": "hard", "std_diff": 0.002, "noise_rate": r}
                             for r in (0, 0.4, 0.8)] + [{"metric": "ece", "baseline": "hard", "std_diff": 0.05,
                                                         "noise_rate": 0.2}])
    text = b.claim_text(next(c for c in b.CLAIMS_LIST if c[1] == "ece"), pooled, per_rate)
    assert ("against hard labels **does not hold**, OLS is worse (OLS − hard: mean +5.0 points, 95% CI +4.0 to "
            "+6.0 over 6 (rate, seed) pairs") in text
    assert "against LS **inconclusive** (OLS − ls: mean −1.0 points, 95% CI −3.0 to +1.0" in text
    assert "OLS lower in 4 of 6; p = 0.4, adjusted 0.4; 12 (rate, seed) pairs would decide at this spread" in text
    assert "p = 0.001, adjusted 0.002; seed-to-seed std of the difference within a rate (0%, 40%, 80%): median 0.2)" in text
    assert text.startswith("- *OLS has a lower ECE* (ECE, noise rates 0%, 40%, 80%): ")
    claim = ("OLS is as calibrated", "ece", "noisy", 100, " points", "ECE")
    assert "against hard labels **does not hold**: OLS is equivalent to it within ±0.5 points" in b.claim_text(
        claim, pooled, per_rate)


@pytest.mark.parametrize("page, marker", [("README.md", "summary:begin"), ("docs/results/cpu-regime.md", "tier:begin"),
                                          ("docs/results/quick.md", "results:begin")])
def test_missing_markers_are_named(page, marker):
    b = _builder(ROOT)
    assert Path(page) in b.PAGES
    with pytest.raises(SystemExit, match=marker) as e:
        b.render("# a page without the markers\n", Path(page))
    assert page in str(e.value)


def test_each_section_is_in_its_file_and_links_from_it(tmp_path):
    """Every marker pair is in the file the builder writes it to, once; the results pages' links resolve from
    docs/results/ (where the pages are), the README's from the repository root."""
    import re
    b = _builder(ROOT)
    for page, sections in b.PAGES.items():
        text = (ROOT / page).read_text()
        for begin, end, _ in sections:
            assert text.count(begin) == 1 and text.count(end) == 1, (page, begin)
            section = text.split(begin, 1)[1].split(end, 1)[0]
            links = re.findall(r"\]\(([^)#\s]+)[^)]*\)", section)
            assert links, (page, begin)
            for link in links:
                if "://" not in link:
                    assert (ROOT / page).parent.joinpath(link).exists(), (page, link)


def test_the_readme_summary_follows_the_audits(tmp_path):
    """The README's one results table is read from the claims audits: change a pooled difference in a copy and
    the table says the new figure, --check fails until it is rewritten."""
    _copy(tmp_path)
    b = _builder(tmp_path)
    path = tmp_path / b.TIER / "claims/audit_pooled.csv"
    pooled = pd.read_csv(path)
    i = pooled.index[(pooled.metric == "ece") & (pooled.scope == "all") & (pooled.baseline == "hard")][0]
    assert pooled.loc[i, "outcome"] == "better"
    before = f"vs hard: **holds** ({b._signed(pooled.loc[i, 'mean_diff'] * 100, 1)} points)"
    assert before in b.summary_section()
    pooled.loc[i, "mean_diff"] = -0.4321
    pooled.loc[i, "outcome"] = "inconclusive"
    pooled.to_csv(path, index=False)
    assert "vs hard: inconclusive (−43.2 points)" in b.summary_section()
    assert b.main(["--check"]) == 1 and b.main([]) == 0 and b.main(["--check"]) == 0


def test_tier_section_follows_the_search_records_and_the_benchmark(tmp_path):
    """The tier search table is read from the committed run records, the epoch costs from the benchmark's
    JSON: change them in a copy and the section changes, and --check fails until it is rewritten."""
    import json
    _copy(tmp_path)
    b = _builder(tmp_path)
    run = sorted((tmp_path / b.SEARCH).iterdir())[0]
    e = pd.read_csv(run / "epochs.csv")
    before = f"{(1 - e['noisy_err'].iloc[-1]) * 100:.1f}%"
    assert before in b.tier_section()
    e.loc[e.index[-1], "noisy_err"] = 0.4321  # 56.8% fitted
    e.to_csv(run / "epochs.csv", index=False)
    assert "56.8%" in b.tier_section()
    cost = json.loads((tmp_path / b.EPOCH_COST).read_text())
    cost["seconds"]["train fp32"] = 1.23
    (tmp_path / b.EPOCH_COST).write_text(json.dumps(cost))
    assert "one training epoch takes 1.23 s" in b.tier_section()
    assert b.main(["--check"]) == 1 and b.main([]) == 0 and b.main(["--check"]) == 0


def test_claim_lines_read_the_guard_of_a_guarded_audit():
    """An audit made with the regime guard: a pooled row outside the regime is said so, a row that left a
    rate out says which."""
    b = _builder(ROOT)
    base = dict(metric="test_err_last", scope="noisy", regime="ok", n=6, mean_diff=-0.02, std_diff=0.01,
                min_diff=-0.03, max_diff=-0.01, lower=6, p=0.01, p_adj=0.02, ci_lo=-0.03, ci_hi=-0.01, margin=0.005,
                seeds_needed=NAN, outcome="better")
    pooled = pd.DataFrame([
        {**base, "baseline": "hard", "rates": "0.2 0.4 0.6", "outside_rates": "0.8"},
        {**base, "baseline": "ls", "rates": "", "outside_rates": "0.2 0.4 0.6 0.8", "n": 0, "regime": "outside",
         "outcome": "inconclusive: outside the regime (hard labels fit 12-30% of the wrong labels at these noise "
                    "rates; the claim needs >= 60%)"}])
    claim = next(c for c in b.CLAIMS_LIST if c[1] == "test_err_last")
    text = b.claim_text(claim, pooled, pd.DataFrame(columns=["metric", "baseline", "std_diff", "noise_rate", "base_mean"]))
    assert "noise rates 20%, 40%, 60%):" in text
    assert "against hard labels **holds** (OLS − hard: mean −2.0 points" in text and "noise 80% left out" in text
    assert "against LS **inconclusive: outside the regime (hard labels fit 12-30%" in text


def test_publish_autoattack_scores_with_the_setting_it_reports():
    """docs/results/publish_autoattack.sh reports (and audits) the eval_id its own scoring options give."""
    import re

    from robustbench_ols.cli import build_parser, commands
    script = (ROOT / "docs/results/publish_autoattack.sh").read_text()
    opts = re.search(r'SCORING="([^"]*)"', script).group(1).split()
    ev = commands.eval_spec_from_args(build_parser().parse_args(["eval", "x", *opts]))
    assert ev.eval_id == re.search(r"EVAL_ID=(\w+)", script).group(1)
    # every PGD of it steps eps/4 (issue 24's rule), the setting the results page's section reports
    assert all(s.alpha == s.eps / 4 for s in ev.attack_specs if s.kind == "pgd")
    options = re.search(r'SCORING="([^"]*)"', script).group(1).split()
    eval_id = re.search(r"EVAL_ID=(\w+)", script).group(1)
    args = build_parser().parse_args(["audit", "--method", "ols", "--against", "hard,ls", "--preset", "cpu-regime",
                                      "--no-run", *options])
    assert commands.grid_from_args(args)[2].eval_id == eval_id


@pytest.mark.parametrize("folder", ["cpu-regime/claims", "quick/claims", "cpu-regime/autoattack/claims",
                                    "noisy-val/claims"])
def test_each_claims_spread_is_computed_over_exactly_its_rates(folder):
    """Every results sentence's 'seed-to-seed std ... median' is the median of the per-rate spreads over the
    rates that claim pooled (its audit row's `rates`), recomputed here from audit.csv, and the sentence names
    them."""
    import re
    b = _builder(ROOT)
    path = ROOT / "docs/results" / folder
    if not (path / "audit_pooled.csv").exists():
        pytest.skip(f"{folder} is not published")
    pooled, per_rate = pd.read_csv(path / "audit_pooled.csv"), pd.read_csv(path / "audit.csv")
    checked = 0
    for claim in [*b.CLAIMS_LIST, *b.AA_CLAIMS, b.SEL_CLAIM]:
        rows = pooled[(pooled.metric == claim[1]) & (pooled.scope == claim[2])]
        text = b.claim_text(claim, pooled, per_rate)
        for r in rows.itertuples():
            rates = b._rates_of(r.rates)
            if not rates or str(r.outcome).startswith(b.OUTSIDE):
                continue
            own = per_rate[(per_rate.metric == claim[1]) & (per_rate.baseline == r.baseline)
                           & per_rate.noise_rate.isin(rates)].std_diff.dropna()
            m = re.search(r"within a rate \(([^)]*)\): median ([\d.]+)", text.split(f"(OLS − {r.baseline}:")[1])
            assert m, (claim[0], r.baseline)
            assert m.group(1) == b._rates_text(rates)
            assert m.group(2) == f"{own.median() * claim[3]:.{1 if claim[3] == 100 else 3}f}"
            checked += 1
    assert checked


def test_publish_noisy_val_reports_the_setting_its_grid_scores():
    """docs/results/publish_noisy_val.sh reports the eval_id its grid scores at the noisy-validation epoch."""
    import re

    from robustbench_ols.cli import build_parser, commands
    script = (ROOT / "docs/results/publish_noisy_val.sh").read_text()
    grid = re.search(r'GRID="([^"]*)"', script, re.S).group(1).split()
    args = build_parser().parse_args(["matrix", *grid, "--select", "noisy-val"])
    assert commands.grid_from_args(args)[2].eval_id == re.search(r"EVAL_ID_NOISY_VAL=(\w+)", script).group(1)


def test_the_published_robustness_audit_decides_at_1_255_and_every_record_names_its_surrogate():
    """The re-scored tier: robustness verdicts at 1/255 inside the regime (off the floor), the budgets of each
    attack in one family; every run's record carries the transfer check with its surrogate named (a hard-label
    run is its own), and every PGD-20 stepped eps/4."""
    aa = ROOT / "docs/results/cpu-regime/autoattack"
    table = pd.read_csv(aa / "claims/audit.csv")
    for family in ("pgd_err", "aa_err", "robust_err"):
        rows = table[table.family == family]
        assert sorted(rows.budget.unique()) == [1.0, 2.0, 8.0]
        one = rows[rows.budget == 1]
        assert one.regime.eq("ok").any()
        tested = rows.regime.eq("ok") & rows.p.notna()  # a comparison without spread is in no family
        assert (one[one.regime.eq("ok") & one.p.notna()].family_size == tested.sum()).all()
    r = pd.read_csv(aa / "robustness.csv")
    hard = r.method_label == "hard"
    assert r.loc[hard, "transfer_surrogate"].eq("self").all()
    others = r[~hard]
    assert others.transfer_surrogate.str.fullmatch(r"[0-9a-f]{12}").all()
    assert others[["transfer_err", "transfer_eps2_err", "transfer_eps1_err"]].notna().all().all()
    steps = pd.read_csv(aa / "step_rule.csv")
    # the old step's records: 2/255 for every run, 1/255 for hard labels, LS and OLS (as published before)
    assert len(steps[steps.budget == 2]) == len(r)
    assert set(steps[steps.budget == 1].method_label) == {"hard", "ls", "ols"}
    assert (steps.pgd20_step_eps_4.notna() & steps.pgd20_step_2_255.notna()).all()

"""`write_report` on a small real grid (synthetic set): every file, the figures' contents, Table VII
against a direct computation from the run records, missing cells shown, and the paper's numbers."""
import json
import math
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from robustbench_ols import report
from robustbench_ols.report import paper
from robustbench_ols.scoring.evaluation import EvalSpec
from robustbench_ols.spec import ExecOptions, RunSpec
from robustbench_ols.store.results import collect, epochs
from robustbench_ols.train.run import execute

EX = ExecOptions(device="cpu", progress=False)
EV = EvalSpec(attacks=("fgsm", "pgd:steps=2"), attack_examples=20)
METHODS, NOISES, SEEDS = ("hard", "ls"), ("none", "symmetric:0.4"), (0, 1)
SHORT = ("ls", "symmetric:0.4", 1)  # the deliberately missing run: ls at 40% has 1 seed of 2


@pytest.fixture(scope="module")
def grid(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("runs")
    for m in METHODS:
        for noise in NOISES:
            for seed in SEEDS:
                if (m, noise, seed) != SHORT:
                    execute(RunSpec(dataset="synthetic", model="resnet8", method=m, noise=noise, epochs=2,
                                    batch_size=100, train_subset=300, seed=seed, milestones=()), EX, root, EV)
    # A failed run: spec.json and status.json, no DONE.
    done = sorted(root.glob("*/DONE"))[0].parent
    bad = root / "failedrun01"
    bad.mkdir()
    shutil.copy(done / "spec.json", bad / "spec.json")
    (bad / "status.json").write_text(json.dumps({"status": "failed", "epoch": 2, "reason": "non-finite loss"}))
    out = tmp_path_factory.mktemp("report")
    path = report.write_report(root, out)
    return root, out, path


def records(root) -> pd.DataFrame:
    """The runs read straight from their files, without results.collect."""
    rows = []
    for d in sorted(root.glob("*/DONE")):
        s = json.loads((d.parent / "spec.json").read_text())["spec"]
        m = json.loads((d.parent / "metrics.json").read_text())
        rows.append({"dir": d.parent, "method": s["method"], "noise": s["noise"], "seed": s["seed"], **m})
    return pd.DataFrame(rows)


def ls_label(root) -> str:
    return collect(root).query("method == 'ls'")["method_label"].iloc[0]


def test_every_table_and_figure_is_written(grid):
    root, out, path = grid
    assert path == out / "report.md"
    names = [f"table{k}.{x}" for k in (7, 8, 11, 12) for x in ("md", "csv")]
    names += [f"{f}.{x}" for f in ("fig4", "fig5", "error_vs_noise", "robust_vs_eps") for x in ("png", "pdf")]
    names += ["reliability_hard.png", f"reliability_{report.slug(ls_label(root))}.png"]
    text = path.read_text()
    for n in names:
        assert (out / n).stat().st_size > 0, n
        assert f"({n})" in text, f"report.md does not link {n}"
    for n in names:
        if n.endswith(".png"):
            assert (out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if n.endswith(".pdf"):
            assert (out / n).read_bytes()[:5] == b"%PDF-"
    assert "Table XII is empty" in (out / "table12.md").read_text()  # synthetic: no CIFAR-10H


@pytest.mark.parametrize("which, column", [("last", "test_err_last"), ("oracle", "test_err_best")])
def test_table7_equals_a_direct_computation(grid, which, column):
    """Without a validation split, a run's own best epoch (metrics.json) is the oracle's, the lowest test error."""
    root, out, _ = grid
    rec = records(root)
    direct = rec.groupby(["method", "noise"])[column].agg(["mean", "std", "count"])
    t = report.table7(collect(root), which=which)
    assert len(t) == 4
    for _, r in t.iterrows():
        noise = "none" if r["noise_col"] == "0%" else "symmetric:0.4"
        want = direct.loc[(r["method"], noise)]
        assert r["n"] == want["count"] and r["n_expected"] == 2
        assert r["mean"] == pytest.approx(want["mean"], abs=1e-12)
        if want["count"] > 1:
            assert r["std"] == pytest.approx(want["std"], abs=1e-12)
            vals = rec.query("method == @r.method and noise == @noise")[column]
            assert r["std"] == pytest.approx(np.std(vals, ddof=1))  # ddof=1, not numpy's default
        else:
            assert math.isnan(r["std"])
    csv = pd.read_csv(out / "table7.csv").query("which == @which")
    assert sorted(csv["mean"]) == pytest.approx(sorted(t["mean"]))
    # The Markdown shows the same numbers in percent.
    md = (out / "table7.md").read_text()
    hard0 = direct.loc[("hard", "none")]
    assert f"{hard0['mean'] * 100:.2f} ± {hard0['std'] * 100:.2f}" in md


def test_missing_cells_are_shown_not_averaged_away(grid):
    root, out, path = grid
    lbl = ls_label(root)
    md = (out / "table7.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith(f"| {lbl} |")]
    assert len(rows) == 2  # last and best
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert "n=" not in cells[1] and "n=1 of 2" in cells[2]  # 0% is full, 40% is short
    assert "n=1 of 2" not in "".join(l for l in md.splitlines() if l.startswith("| hard |"))
    text = path.read_text()
    assert f"MISSING: {lbl} @ 40%: n=1 of 2" in text
    # A combination with no run at all is a row with n = 0, shown as such.
    df = collect(root)
    df = df[~((df["method"] == "ls") & (df["noise_kind"] == "symmetric"))]
    t = report.table7(df)
    assert t.query("method == 'ls' and noise_col == '40%'")["n"].tolist() == [0]
    body, _ = report.table7_markdown(df)
    assert "— (no run)" in body and f"MISSING: {lbl} @ 40%: n=0 of 2" in body


def test_incomplete_runs_are_listed(grid):
    _, _, path = grid
    text = path.read_text()
    assert re.search(r"\| failedrun01 \| failed \| 2 \| non-finite loss \|", text)
    assert "7 finished runs" in text


def test_fig4_panels_lines_and_values(grid):
    root, _, _ = grid
    ep = epochs(root)
    fig = report.fig4(ep)
    assert len(fig.axes) == 4  # training and test error x 2 noise rates
    for ax in fig.axes:
        assert len(ax.get_lines()) == len(METHODS) and ax.get_xlabel() == "epoch"
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["training error, noise 0%", "training error, noise 40%",
                      "test error, noise 0%", "test error, noise 40%"]
    assert "noisy labels" in fig.axes[0].get_ylabel() and "test error" in fig.axes[2].get_ylabel()
    # The hard line of the 40% test panel is the mean over the two seeds' epochs.csv, in percent.
    rec = records(root).query("method == 'hard' and noise == 'symmetric:0.4'")
    per_seed = [pd.read_csv(d / "epochs.csv")["test_err"].to_numpy() for d in rec["dir"]]
    line = next(ln for ln in fig.axes[3].get_lines() if ln.get_label().startswith("hard"))
    assert np.allclose(line.get_ydata(), np.mean(per_seed, axis=0) * 100)
    assert line.get_label() == "hard (n=2)"
    # The seeds per method are written in each panel (the legend, one for the figure, names the methods).
    assert [t.get_text() for t in fig.axes[3].texts] == [f"n=2 seeds\nn=1: {ls_label(root)}"]
    assert [t.get_text() for t in fig.axes[2].texts] == ["n=2 seeds"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["hard", ls_label(root)]


def test_fig4_test_curve_with_a_test_pass_every_k_epochs(tmp_path):
    """--test-every 2 over 5 epochs: the test line has the tested epochs (2, 4 and the last) only, with
    markers, and the panel says so; the training line has every epoch."""
    execute(RunSpec(dataset="synthetic", model="resnet8", method="hard", noise="symmetric:0.4", epochs=5,
                    batch_size=100, train_subset=300, milestones=(), test_every=2), EX, tmp_path, EV)
    fig = report.fig4(epochs(tmp_path))
    train, test = fig.axes[0].get_lines()[0], fig.axes[1].get_lines()[0]
    assert list(train.get_xdata()) == [1, 2, 3, 4, 5] and train.get_marker() in ("None", None, "")
    assert list(test.get_xdata()) == [2, 4, 5] and test.get_marker() == "." and np.isfinite(test.get_ydata()).all()
    assert fig.axes[1].get_ylabel() == "test error (%), tested epochs"


def test_a_record_older_than_a_run_field_is_the_same_setting(grid, tmp_path):
    """A run recorded before a RunSpec field existed (no `noisy_val` in its spec.json) and one with that field at
    its old value (0.0) are one setting in the report, not two variants (spec/ids.py's rule)."""
    root = tmp_path / "runs"
    shutil.copytree(grid[0], root)
    old = sorted(root.glob("*/DONE"))[0].parent
    record = json.loads((old / "spec.json").read_text())
    assert record["spec"].pop("noisy_val") == 0.0
    (old / "spec.json").write_text(json.dumps(record))
    d = report.prepare(collect(root))
    assert set(d["variant"]) == {""}
    assert len(d.groupby(list(report.tables.SETTING), dropna=False)) == 1


def test_fig5_only_noisy_panels(grid):
    root, _, _ = grid
    ep = epochs(root)
    fig = report.fig5(ep)
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "wrong-label images, noise 40%"
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2 and "wrong labels" in ax.get_ylabel()
    rec = records(root).query("method == 'ls' and noise == 'symmetric:0.4'")
    only = pd.read_csv(rec["dir"].iloc[0] / "epochs.csv")["noisy_err"].to_numpy()
    line = next(ln for ln in ax.get_lines() if ln.get_label().startswith("ls"))
    assert np.allclose(line.get_ydata(), only * 100) and line.get_label().endswith("(n=1)")


def test_error_vs_noise(grid):
    root, _, _ = grid
    fig = report.error_vs_noise(collect(root))
    assert len(fig.axes) == 2
    for ax, which in zip(fig.axes, ("last", "best")):
        assert which in ax.get_title() and ax.get_ylabel() == "test error (%)"
        assert len(ax.get_lines()) == 2
        assert [list(ln.get_xdata()) for ln in ax.get_lines()] == [[0, 40], [0, 40]]
    # The short cell is annotated on the plot.
    assert any("n=1 of 2" in t.get_text() for t in fig.axes[0].texts)


def test_reliability_pooled_over_seeds(grid):
    root, _, _ = grid
    d = report.prepare(collect(root)).query("method == 'hard'")
    pooled = report.pool_reliability(report.reliability_rows(d, None))
    raw = {nc: [pd.read_csv(f"{r}/reliability.csv") for r in g["run_dir"]] for nc, g in d.groupby("noise_col")}
    assert pooled["count"].sum() == sum(t["count"].sum() for ts in raw.values() for t in ts) == 4 * 500
    for nc, tables in raw.items():
        counts = sum(t["count"].to_numpy() for t in tables)
        hits = sum((t["accuracy"].fillna(0) * t["count"]).to_numpy() for t in tables)
        p = pooled[pooled["noise_col"] == nc]
        assert np.array_equal(p["count"].to_numpy(), counts)
        ok = counts > 0
        assert np.allclose(p["accuracy"].to_numpy()[ok], hits[ok] / counts[ok])
        assert p["accuracy"].isna().to_numpy()[~ok].all()  # empty bins stay empty
    fig = report.reliability_figure(pooled, title="hard")
    assert len(fig.axes) == 2 and [ax.get_title().split(":")[0] for ax in fig.axes] == ["noise 0%", "noise 40%"]
    assert all(ax.get_xlabel() == "confidence" and ax.get_ylabel() == "accuracy" for ax in fig.axes)


def test_attack_columns_found_whatever_the_steps():
    df = pd.DataFrame({"fgsm_err": [0.5], "pgd2_err": [0.6], "pgd20_err": [0.7], "pgd20_eps4_err": [0.1],
                       "pgd7_err": [np.nan]})
    assert report.attack_columns(df) == ["fgsm_err", "pgd20_err", "pgd2_err", "pgd20_eps4_err"]
    df = df.assign(aa_err=0.8, worst_err=0.8, square_err=0.7, apgd_ce_err=0.75, aa_eps4_err=0.2, worst_eps4_err=0.2)
    assert report.attack_columns(df) == ["fgsm_err", "pgd20_err", "pgd2_err", "apgd_ce_err", "square_err", "aa_err",
                                         "worst_err", "pgd20_eps4_err", "aa_eps4_err", "worst_eps4_err"]


def test_robust_error_against_eps_and_the_masking_flags():
    """One panel per noise rate, one line per method through the sweep's mean; the flagged runs listed."""
    from robustbench_ols.report.figures import robust_vs_eps
    from robustbench_ols.report.paper_tables import masking_markdown
    df = fake_runs("cifar10", "resnet8")
    sweep = {0: 0.3, 1: 0.5, 2: 0.7, 8: 0.95, 64: 1.0}
    df = df.assign(**{f"sweep_eps{e}_err": v for e, v in sweep.items()}, check_examples=100,
                   masking_suspected=False, masking_checks="")
    df.loc[(df.method == "ols") & (df.seed == 2) & (df.noise_rate == 0.4), ["masking_suspected", "masking_checks"]] = \
        [True, "square,zero_grad"]
    fig = robust_vs_eps(df)
    assert [ax.get_title() for ax in fig.axes] == ["noise 0%", "noise 40%"]
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [0, 1, 2, 8, 64] and list(line.get_ydata()) == pytest.approx(
        [100 * v for v in sweep.values()])
    df = report.prepare(df)
    text = masking_markdown(df)
    assert "ran for 12 of 12 runs on 100 images each: 1 flagged" in text
    assert "| ols | 40% | 2 | square,zero_grad |" in text
    assert "no run was flagged" in masking_markdown(df.assign(masking_suspected=False))
    assert "none recorded" in masking_markdown(df.drop(columns=["masking_suspected"]))
    assert robust_vs_eps(df.drop(columns=[f"sweep_eps{e}_err" for e in sweep])) is None


def test_table7_rejects_unknown_which(grid):
    with pytest.raises(ValueError, match="last"):
        report.table7(collect(grid[0]), which="middle")


def fake_runs(dataset="cifar100", model="resnet56b") -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for method in ("hard", "ols"):
        for kind, rate in (("none", 0.0), ("symmetric", 0.4)):
            for seed in (0, 1, 2):
                e = rng.uniform(0.2, 0.5)
                rows.append(dict(run_id=f"{method}{rate}{seed}", dataset=dataset, model=model, method=method,
                                 method_label=method, noise="none" if kind == "none" else f"symmetric:{rate}",
                                 noise_kind=kind, noise_rate=rate, seed=seed, epochs=30, train_subset=5000,
                                 val_split=0, test_err_last=e, test_err_best=e - 0.01, clean_err=e, ece=0.05))
    return pd.DataFrame(rows)


def test_paper_match():
    row = dict(dataset="cifar100", model="resnet56b", method="ols", method_label="ols", noise_kind="symmetric",
               noise_rate=0.4)
    f = paper.match("table7", row, "test_err_last")
    assert (f.value, f.std, f.scale) == (38.86, 0.13, 100.0)
    assert paper.match("table7", {**row, "noise_rate": 0.0, "noise_kind": "none"}, "test_err_best").value == 25.24
    # Another model still gets the paper's figure (the report labels the paper's protocol).
    assert paper.match("table7", {**row, "model": "resnet8"}, "test_err_last").value == 38.86
    for other in ({"dataset": "cifar10"}, {"noise_kind": "symmetric-all"},
                  {"noise_rate": 0.3}, {"method_label": "ols:alpha=0.3"}, {"method": "gce", "method_label": "gce"}):
        assert paper.match("table7", {**row, **other}, "test_err_last") is None, other
    # LS with its defaults is labelled ls:eps=0.1 by results.method_label; it still matches.
    ls = {**row, "method": "ls", "method_label": collect_label_for_default("ls")}
    assert paper.match("table7", ls, "test_err_last").value == 43.99
    c10 = dict(dataset="cifar10", model="resnet29b", method="hard", method_label="hard", noise_kind="none",
               noise_rate=0.0)
    assert paper.match("table8", c10, "pgd20_err").value == 93.18
    assert paper.match("table8", c10, "pgd2_err") is None
    assert paper.match("table8", {**c10, "noise_kind": "symmetric", "noise_rate": 0.4}, "clean_err") is None
    kl = paper.match("table12", c10, "c10h_kl_correct")
    assert (kl.value, kl.scale, kl.std) == (0.2974, 1.0, None)
    ece = paper.match("table11", {**row, "model": "resnet110b", "noise_kind": "none", "noise_rate": 0.0}, "ece")
    assert (ece.value, ece.std) == (2.05, 0.68)


def collect_label_for_default(method: str) -> str:
    from robustbench_ols.methods import build_method, method_label
    return method_label(method, build_method(method, {})[1])


def test_paper_columns_only_where_the_paper_has_the_setting(grid):
    body, csv = report.table7_markdown(fake_runs(), paper=True)
    assert "0% paper†" in body and "40% paper†" in body
    assert "38.86 ± 0.13" in body and "47.07 ± 1.08" in body and "full protocol" in body
    assert csv.query("method == 'ols' and noise_col == '40%' and which == 'last'")["paper"].iloc[0] == 0.3886
    plain, _ = report.table7_markdown(fake_runs(), paper=False)
    assert "paper†" not in plain
    other, _ = report.table7_markdown(fake_runs(model="resnet20"), paper=True)
    assert "40% paper†" in other and "ResNet-56" in other and "Ours: resnet20" in other
    assert "compare the ordering, not the values" in other
    assert "compare the ordering" in body  # ours: 2 epochs, not the paper's 300
    # Our synthetic grid: paper=True adds nothing.
    df = collect(grid[0])
    assert report.table7_markdown(df, paper=True)[0] == report.table7_markdown(df, paper=False)[0]
    # Table XI: the paper's ResNet-56 error and ECE beside ours at 0% only.
    tables = {stem: report.parts_markdown(parts) for stem, _, parts, _ in report.table_parts(
        report.prepare(fake_runs()), True)}
    assert "ECE paper†" in tables["table11"] and "11.37 ± 0.53" in tables["table11"]
    assert "paper†" not in tables["table8"]  # CIFAR-100: Table VIII is CIFAR-10


def test_cost_and_provenance_from_the_records(grid):
    """cost.csv: seconds per cell = train_seconds + eval_seconds of metrics.json, per method; report.md
    names the device, torch and code version of every run and the stretches' wall time."""
    root, out, path = grid
    df = records(root)
    df["seconds"] = df.train_seconds + df.eval_seconds
    cost = pd.read_csv(out / "cost.csv").set_index("method_label")
    labels = {"hard": "hard", "ls": ls_label(root)}
    for m, g in df.groupby("method"):
        row = cost.loc[labels[m]]
        assert row.cells == len(g)
        assert row.mean_s == pytest.approx(g.seconds.mean()) and row.total_s == pytest.approx(g.seconds.sum())
        assert row.std_s == pytest.approx(g.seconds.std(ddof=1))
    text = path.read_text()
    assert "## Cost and provenance" in text and "All 7 runs:" in text
    ex = json.loads((df.dir.iloc[0] / "executions.json").read_text())[0]
    assert f"`{ex['device_name']} (cpu)` (7 runs)" in text
    assert f"`{ex['git']['commit'][:12]}" in text
    spec = json.loads((df.dir.iloc[0] / "spec.json").read_text())
    assert f"`{spec['versions']['torch']}` (7 runs)" in text
    assert re.search(r"Wall time: \d+ min in 1 stretch of work", text)


def test_images_per_run_are_stated(grid):
    """report.md and provenance.json say how many images each method trained on; a method that holds
    clean meta images out of the subset (MW-Net) is named with its counts."""
    root, out, path = grid
    assert "  - images per run: 300 training images (every method)" in path.read_text()
    (scale,) = json.loads((out / "provenance.json").read_text())["scale"]
    assert scale["images"] == [{"train": 300, "meta": 0, "val": 0, "methods": ["hard", ls_label(root)]}]
    d = pd.DataFrame({"method_label": ["hard", "mwnet", "hard", "ls"], "num_train": [4000, 3000, 4000, 3900],
                      "num_meta": [0, 1000, 0, 0], "num_val": [0, 0, 0, 100]})
    assert report.images_text(report.images_per_run(d), 3) == (
        "3,000 training + 1,000 clean meta images (mwnet); 3,900 training + 100 validation images (ls); "
        "4,000 training images (hard)")
    assert report.images_per_run(d.drop(columns=["num_train", "num_meta", "num_val"])) == []
    old = report.images_per_run(d.drop(columns=["num_meta", "num_val"]))  # an older record: no counts of those
    assert [(x["train"], x["meta"], x["val"]) for x in old] == [(3000, 0, 0), (3900, 0, 0), (4000, 0, 0)]


def test_stretches_split_at_long_pauses():
    from datetime import datetime, timedelta, timezone

    from robustbench_ols.report.cost import stretches
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    rows = [(0, 60), (61, 120), (130, 200),  # one stretch: pauses of 1 and 10 s
            (200 + 11 * 60, 200 + 11 * 60 + 30)]  # after an 11-minute pause: a second one
    times = pd.DataFrame([{"start": t0 + timedelta(seconds=a), "end": t0 + timedelta(seconds=b)} for a, b in rows])
    st = stretches(times)
    assert [s["runs"] for s in st] == [3, 1]
    assert [s["wall_s"] for s in st] == [200, 30]


def test_figure_formats(grid, tmp_path):
    root, _, _ = grid
    path = report.write_report(root, tmp_path, formats=["png"])
    assert (tmp_path / "fig4.png").exists() and not list(tmp_path.glob("*.pdf"))
    assert "pdf" not in path.read_text().split("## Figures", 1)[1]
    with pytest.raises(ValueError, match="png, pdf, svg"):
        report.write_report(root, tmp_path, formats=["jpg"])


def test_report_shows_and_prints_the_regime(grid, tmp_path, capsys):
    """report.md's Regime table and the lines `rbols report` prints: the hard-label wrong-label fit per noise
    rate, lowest to highest seed, read from the runs' metrics.json; two smoke epochs never memorise."""
    from robustbench_ols.cli import main
    root, out, path = grid
    fits = 1 - records(root).query("method == 'hard' and noise == 'symmetric:0.4'")["noisy_err_last"]
    text = path.read_text()
    assert "## Regime: do hard labels memorise the wrong labels?" in text
    assert (f"| synthetic | resnet8 | symmetric | 0.4 | 2 | 300 | 2 | {fits.min():.1%} | {fits.mean():.1%} | "
            f"{fits.max():.1%} | no |") in text
    assert main(["report", str(root), "--to", str(tmp_path), "--format", "png"]) == 0
    printed = capsys.readouterr().out
    assert (f"synthetic resnet8 2 epochs subset 300 symmetric 0.4: hard labels fit {fits.min():.1%}-{fits.max():.1%} "
            "of the wrong labels "
            "(2 seeds): outside the regime (< 60% on some seed)") in printed


_OPENED: list | None = None  # the files opened while a command is watched (an audit hook cannot be removed)


def _watch(event, args):
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


def opened_during(root, fn) -> dict:
    """{file under `root`: times it was opened} while `fn()` ran (Python's audit hook sees every open)."""
    import collections
    import sys
    global _OPENED
    if _watch not in getattr(opened_during, "hooked", ()):
        sys.addaudithook(_watch)
        opened_during.hooked = (_watch,)
    _OPENED = []
    try:
        fn()
    finally:
        seen, _OPENED = _OPENED, None
    prefix = os.path.realpath(root) + os.sep
    return collections.Counter(os.path.realpath(p) for p in seen if os.path.realpath(p).startswith(prefix))


def test_report_and_audit_read_each_run_file_once(grid, tmp_path, capsys):
    """`rbols report` (the tables, the figures, the cost and provenance, the regime lines) and an audit read
    every file of every run folder at most once: one ResultSet per command (store/results.py)."""
    from robustbench_ols.audit.write import write_audit
    from robustbench_ols.cli import main
    root, _, _ = grid
    counts = opened_during(root, lambda: main(["report", str(root), "--to", str(tmp_path / "r"), "--format", "png"]))
    assert capsys.readouterr().out and counts, "the report read nothing"
    assert {f for f in counts if f.endswith(("metrics.json", "spec.json", "epochs.csv"))}, counts
    assert max(counts.values()) == 1, {f: n for f, n in counts.items() if n > 1}
    label = ls_label(root)
    counts = opened_during(root, lambda: write_audit(root, tmp_path / "a", label, ["hard"]))
    assert counts and max(counts.values()) == 1, {f: n for f, n in counts.items() if n > 1}

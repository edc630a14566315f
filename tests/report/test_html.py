"""report.html (`write_html`) on a small real grid (synthetic set) with an audit: self-contained (no URL to
fetch), every table and figure of report.md, the audit's comparisons, the provenance; then in a real
headless Chromium (Debian's `chromium` through playwright): no console error, a non-blank screenshot
showing the tables, sorting by a column header, and a legend click hiding a method in Fig. 4."""
import base64
import io
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("jinja2", reason="the html extra is not installed (pip install -e '.[html]')")
pytest.importorskip("plotly", reason="the html extra is not installed (pip install -e '.[html]')")
pytest.importorskip("markdown", reason="the html extra is not installed (pip install -e '.[html]')")

from robustbench_ols import report  # noqa: E402
from robustbench_ols.audit.write import write_audit  # noqa: E402
from robustbench_ols.scoring.evaluation import EvalSpec  # noqa: E402
from robustbench_ols.spec import ExecOptions, RunSpec  # noqa: E402
from robustbench_ols.store.results import collect  # noqa: E402
from robustbench_ols.train.run import execute  # noqa: E402

EX = ExecOptions(device="cpu", progress=False)
# FGSM on 20 images and the masking checks on 10 with a two-budget sweep: robust_vs_eps is drawn too.
EV = EvalSpec(attacks=("fgsm",), attack_examples=20, check_examples=10, eps_sweep=(0, 8))
CELLS = [(m, noise, 0) for m in ("hard", "ls", "ols") for noise in ("none", "symmetric:0.4")]
CELLS += [(m, noise, 1) for m in ("hard", "ols") for noise in ("none", "symmetric:0.4")]  # ls: one seed
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, one_torch_thread):
    """(runs, report.md folder, report.html path) of 10 runs of 2 epochs (about 40 s on one thread)."""
    root = tmp_path_factory.mktemp("runs")
    for m, noise, seed in CELLS:
        execute(RunSpec(dataset="synthetic", model="resnet8", method=m, noise=noise, epochs=2, batch_size=100,
                        train_subset=200, seed=seed, milestones=()), EX, root, EV)
    write_audit(root, root / "audit", "ols", ["hard"])  # found as <results_dir>/audit
    md = tmp_path_factory.mktemp("md")
    report.write_report(root, md, formats=("png",))
    path = report.write_html(root, tmp_path_factory.mktemp("html"))
    return root, md, path


class Page(HTMLParser):
    """Every tag with its attributes, the text of each <section id>, the <style> and <script> bodies."""

    def __init__(self):
        super().__init__()
        self.tags, self.sections, self.styles, self.scripts, self._in, self._open = [], {}, [], [], None, []
        self.section_tags: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        self._open.append(tag)
        if tag == "section":
            self._in = a.get("id")
            self.sections[self._in], self.section_tags[self._in] = [], []
        elif self._in:
            self.section_tags[self._in].append(tag)

    def handle_endtag(self, tag):
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data):
        if self._open and self._open[-1] == "style":
            self.styles.append(data)
        elif self._open and self._open[-1] == "script":
            self.scripts.append(data)
        elif self._in:
            self.sections[self._in].append(data)

    def text(self, section: str) -> str:
        return re.sub(r"\s+", " ", "".join(self.sections.get(section, [])))


@pytest.fixture(scope="module")
def parsed(site):
    p = Page()
    p.feed(site[2].read_text(encoding="utf-8"))
    return p


def test_self_contained(site, parsed):
    """Nothing to fetch: no script, stylesheet, image or frame from a URL; every image is a data URI."""
    assert site[2].name == "report.html"
    for tag, a in parsed.tags:
        for attr in ("src", "href", "data", "srcset", "action"):
            v = (a.get(attr) or "").strip().lower()
            assert not v.startswith(("http:", "https:", "//", "ftp:")), (tag, attr, v[:80])
        if tag == "link":
            pytest.fail(f"a <link> element: {a}")
        if tag == "img":
            assert a["src"].startswith("data:image/png;base64,")
        if tag == "script":
            assert "src" not in a
    assert not any(re.search(r"@import|url\(\s*['\"]?(https?:)?//", s) for s in parsed.styles)
    plotly_js = [s for s in parsed.scripts if "plotly.js v" in s[:2000]]
    assert len(plotly_js) == 1 and len(plotly_js[0]) > 1_000_000  # plotly.js inlined once


def test_every_table_with_the_markdown_numbers(site, parsed):
    """Tables VII, VIII, XI, XII in their sections, from the same DataFrames as report.md: every cell of
    the Markdown tables is on the page, and each table section has an HTML table per Markdown table."""
    root, md, path = site
    tables = report.table_parts(report.prepare(collect(root)), False)
    assert [t[0] for t in tables] == ["table7", "table8", "table11", "table12"]
    for stem, _, parts, _ in tables:
        frames = [p for p in parts if isinstance(p, pd.DataFrame)]
        text = parsed.text(stem)
        assert text, stem
        for f in frames:
            for cell in f.to_numpy().ravel():
                assert str(cell).strip("*") in text, (stem, cell)
        # as many tables as report.md's table file has (Table XII: none, no CIFAR-10H here)
        assert parsed.section_tags[stem].count("table") == (md / f"{stem}.md").read_text().count("\n|---")
    assert parsed.section_tags["table7"].count("table") == 2  # last and best epoch
    assert "n=1 of 2" in parsed.text("table7")  # ls at 40% has one seed of two
    assert "Bold: the two lowest means" in parsed.text("table7")


def test_every_figure_inline(site, parsed):
    """One inline PNG per figure file of report.md (fig4, fig5, error_vs_noise, robust_vs_eps, one
    reliability diagram per method), equal to it, and the audit's difference figures."""
    root, md, path = site
    pngs = sorted(md.glob("*.png"))
    names = {p.stem for p in pngs}
    assert {"fig4", "fig5", "error_vs_noise", "robust_vs_eps", "reliability_hard", "reliability_ols"} <= names
    imgs = {a["alt"]: a["src"] for t, a in parsed.tags if t == "img"}
    for p in pngs:
        assert p.stem in imgs, p.stem
        png = base64.b64decode(imgs[p.stem].split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    diffs = sorted((root / "audit").glob("diff_*.png"))
    assert diffs and all(d.stem in imgs for d in diffs)
    assert len(imgs) == len(pngs) + len(diffs)


def test_interactive_curves(parsed):
    """Fig. 4 and Fig. 5 as plotly figures, one legend entry per method shared by all its traces."""
    divs = {a["id"] for t, a in parsed.tags if t == "div" and "plotly-graph-div" in a.get("class", "")}
    assert divs == {"fig4-0", "fig5-0"}
    calls = [s for s in parsed.scripts if "Plotly.newPlot" in s]
    assert len(calls) == 2
    for s in calls:
        data, _ = json.JSONDecoder().raw_decode(s, s.index("[", s.index("Plotly.newPlot")))
        shown = [t["name"] for t in data if t.get("showlegend")]
        assert sorted(shown) == ["hard", "ls", "ols"]
        assert {t["legendgroup"] for t in data} == {"hard", "ls", "ols"}


def test_audit_and_provenance(site, parsed):
    root, _, _ = site
    a = pd.read_csv(root / "audit" / "audit.csv")
    text = parsed.text("audit")
    assert "Verdict" in text and "ci_lo" in text and "p_adj" in text
    for outcome in a["outcome"].unique():
        assert outcome in text
    body = site[2].read_text(encoding="utf-8")
    table = re.search(r'<table id="T_audit-0-0".*?</table>', body, re.S).group(0)
    assert table.count("<tr>") == len(a) + 1  # the header and every comparison
    ex = json.loads(next(root.glob("*/executions.json")).read_text())[0]
    prov = parsed.text("provenance")
    assert ex["git"]["commit"][:12] in prov and ex["device_name"] in prov
    assert "torch threads: 1 (10 runs)" in prov
    assert collect(root)["eval_id"].iloc[0] in prov and "seeds 0, 1" in prov


def test_write_report_html_draws_once(site, tmp_path):
    """`write_report(html=True)`: report.html beside report.md, its images the PNG files written."""
    root = site[0]
    report.write_report(root, tmp_path, formats=("png",), html=True)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    for p in tmp_path.glob("*.png"):
        assert base64.b64encode(p.read_bytes()).decode() in page, p.name


def test_without_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    path = report.write_html(tmp_path / "empty", tmp_path / "out")
    assert "No finished runs" in path.read_text(encoding="utf-8")


# ---------------------------------------------------------------- in a real browser

@pytest.fixture(scope="module")
def browser(site, tmp_path_factory):
    """A page of report.html in headless Chromium, with the console errors, page errors and requests."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    why = (f"{CHROMIUM} not found: apt-get install chromium (Debian's) to run the browser checks"
           if not CHROMIUM.exists() else None if sync_playwright else
           "playwright not installed: pip install playwright (its Python API drives /usr/bin/chromium)")
    if why and "chromium" in os.environ.get("RBOLS_REQUIRE", "").split(","):
        pytest.fail(f"no browser, and RBOLS_REQUIRE asks for one: {why}")
    if why:
        pytest.skip(why)
    errors, requests = [], []
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path_factory.mktemp("profile")), headless=True,
                                                   executable_path=str(CHROMIUM), args=ARGS,
                                                   viewport={"width": 1400, "height": 1000})
        try:
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(site[2].as_uri(), wait_until="load")
            page.wait_for_function("document.querySelectorAll('.plotly-graph-div .main-svg').length >= 2")
            yield page, errors, requests
        finally:
            ctx.close()


def _column(page, table: str, col: int) -> list[float]:
    """The column's numbers in row order; cells without one ("—") must come last and are left out."""
    texts = [t.strip() for t in page.locator(f"{table} tbody tr td:nth-child({col + 1})").all_inner_texts()]
    nums = [re.match(r"-?\d+\.?\d*(e[-+]?\d+)?", t) for t in texts]
    k = sum(1 for m in nums if m)
    assert all(nums[:k]), texts
    return [float(m.group(0)) for m in nums[:k]]


def test_loads_without_error_or_network(browser):
    page, errors, requests = browser
    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "data:", "blob:"))] == []


def test_screenshot_shows_the_table(browser):
    from PIL import Image
    page = browser[0]
    t = page.locator("#table7 table").first
    t.scroll_into_view_if_needed()
    assert t.is_visible()
    box, view = t.bounding_box(), page.viewport_size
    assert box["width"] > 100 and 0 <= box["y"] < view["height"]
    img = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
    colors, counts = np.unique(img.reshape(-1, 3), axis=0, return_counts=True)
    assert len(colors) > 50 and counts.max() / counts.sum() < 0.95  # not blank
    # the table's own pixels: text on the background, not one colour
    shot = np.asarray(Image.open(io.BytesIO(t.screenshot())).convert("L"))
    assert shot.std() > 10


@pytest.mark.parametrize("table, header", [("#T_audit-0-0", "mean_diff"), ("#table8 table", "clean")])
def test_sorting_a_column(browser, table, header):
    """A click on a numeric column's header sorts the rows by its values; a second click reverses."""
    page = browser[0]
    loc = page.locator(table).first
    table = f"#{loc.get_attribute('id')}"
    heads = page.locator(f"{table} thead th").all_inner_texts()
    col = [h.strip(" ↕▲▼") for h in heads].index(header)
    before = _column(page, table, col)
    assert len(before) >= 4 and len(set(before)) >= 3
    page.locator(f"{table} thead th").nth(col).click()
    up = _column(page, table, col)
    assert up == sorted(before)
    assert page.locator(f"{table} thead th").nth(col).get_attribute("aria-sort") == "ascending"
    page.locator(f"{table} thead th").nth(col).click()
    assert _column(page, table, col) == sorted(before, reverse=True)


def test_legend_click_hides_and_shows_a_method(browser):
    """A click on `hard` in Fig. 4's legend hides its every trace (lines and bands, all panels); a second
    click shows them again (plotly applies a single click after its double-click delay: waited for)."""
    page = browser[0]
    traces = "document.getElementById('fig4-0').data.filter(t => t.legendgroup === 'hard')"
    hidden = f"{traces}.every(t => t.visible === 'legendonly')"
    shown = f"{traces}.every(t => t.visible !== 'legendonly')"
    assert page.evaluate(f"{traces}.length") >= 4 and page.evaluate(shown)
    item = page.locator("#fig4-0 .legend .traces", has_text="hard").locator(".legendtoggle")
    item.click()
    page.wait_for_function(hidden, timeout=5000)
    page.wait_for_timeout(600)  # past the double-click window before the next click
    item.click()
    page.wait_for_function(shown, timeout=5000)

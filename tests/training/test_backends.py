"""One interface for every place a grid runs (executors/backends.py): the built-in backends meet the contract, and
a backend written outside the package, in one file, runs the smoke grid end to end through `rbols matrix` with
its own option, its own dry-run text and the local backend's records."""
import subprocess
import sys
import textwrap

import pytest

from robustbench_ols.cli import main
from robustbench_ols.executors import BACKENDS, Backend
from robustbench_ols.executors.backends import check_backend
from robustbench_ols.spec.grid import Grid

from .grid_helpers import ENV, SMOKE, results

TOY = '''
"""A toy backend: the cells one by one in this process, in the order --toy-order asks."""
from robustbench_ols.executors.backends import Backend


class InOrder(Backend):
    help = "this process, the cells in a chosen order"

    def __init__(self, order):
        self.order = order

    @classmethod
    def add_arguments(cls, group):
        group.add_argument("--toy-order", default="forward", choices=("forward", "reverse"))

    @classmethod
    def from_args(cls, args):
        return cls(args.toy_order)

    def preview(self, cells, out, ev, *, retry_failed):
        return f"toy backend: {len(cells)} cells, {self.order}"

    def run(self, cells, out, ev, ex, *, retry_failed, progress):
        from robustbench_ols.executors.cells import claim_next, run_cell, tally
        for spec in (reversed(cells) if self.order == "reverse" else cells):
            claim = claim_next(spec, out, ev, retry_failed)
            if claim is not None:
                try:
                    print("toy runs", spec.run_id, flush=True)
                    run_cell(spec, ev, ex, out)
                finally:
                    claim.release()
        return tally(cells, out, ev)


class NotABackend:
    pass
'''


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "toy_backend.py").write_text(textwrap.dedent(TOY))
    return {**ENV, "PYTHONPATH": f"{tmp_path}:{ENV.get('PYTHONPATH', '')}"}


def test_every_registered_backend_meets_the_contract():
    assert {"local", "ray", "slurm"} <= set(BACKENDS.names())
    for name in BACKENDS.names():
        cls = BACKENDS.get(name)
        check_backend(cls, name)
        assert issubclass(cls, Backend) and cls.name == name and cls.help


def test_a_backend_from_outside_the_package_runs_the_grid(toy, reference, tmp_path):
    out = tmp_path / "toy"
    asked = [*SMOKE, "--threads", "1", "--backend", "toy_backend:InOrder", "--toy-order", "reverse", "--out", str(out)]
    dry = subprocess.run([sys.executable, "-m", "robustbench_ols", *asked, "--dry-run"], env=toy, capture_output=True,
                         text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr
    assert "toy backend: 6 cells, reverse" in dry.stdout and not out.exists()
    p = subprocess.run([sys.executable, "-m", "robustbench_ols", *asked], env=toy, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    ran = [line.split()[-1] for line in p.stdout.splitlines() if line.startswith("toy runs")]
    assert len(ran) == 6 and "6 of 6 cells done, 0 failed" in p.stdout
    assert ran == [c.run_id for c in reversed(Grid.build("smoke").cells())]  # the order its own option asked
    assert results(out) == results(reference)  # the same records as the local backend


def test_a_bad_backend_is_an_error_that_names_it(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main([*SMOKE, "--backend", "toy_backend:NotABackend", "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert "is not a subclass of robustbench_ols.executors.backends.Backend" in capsys.readouterr().err
    assert main([*SMOKE, "--backend", "nowhere", "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert "unknown backend 'nowhere'; valid backends: local, ray, slurm" in capsys.readouterr().err
    assert main([*SMOKE, "--ray-address", "auto", "--out", str(tmp_path / "o")]) == 2  # the local backend
    assert "--ray-address: for --backend ray only (the backend is local)" in capsys.readouterr().err
    sys.modules.pop("toy_backend", None)

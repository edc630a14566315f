"""Sweeping run settings in a grid: `--sweep KEY=V1,V2` and a TOML [sweep] table give every combination
as its own cell (its own run_id), typed like the RunSpec field; bad sweeps are named."""
import pytest

from robustbench_ols.cli import main
from robustbench_ols.common.errors import SpecError
from robustbench_ols.spec.grid import Grid, parse_sweeps


def test_every_combination_is_a_cell():
    grid = Grid.build("smoke", sweep=parse_sweeps(["lr=0.05,0.1", "epochs=2,3"]))
    cells = grid.cells()
    assert len(cells) == 6 * 4
    combos = {(c.method, c.noise, c.lr, c.epochs) for c in cells}
    assert len(combos) == 24 and {(c.lr, c.epochs) for c in cells} == {(0.05, 2), (0.05, 3), (0.1, 2), (0.1, 3)}
    assert len({c.run_id for c in cells}) == 24
    assert all(isinstance(c.lr, float) and isinstance(c.epochs, int) for c in cells)
    # the default value swept gives the cell the grid has without the sweep (same run_id)
    plain = {c.run_id for c in Grid.build("smoke").cells()}
    assert plain <= {c.run_id for c in Grid.build("smoke", sweep=parse_sweeps(["lr=0.1,0.2"])).cells()}


def test_sweep_table_in_a_config(tmp_path, capsys):
    cfg = tmp_path / "grid.toml"
    cfg.write_text('preset = "smoke"\nmethods = ["hard"]\n[sweep]\nmilestones = [[1], []]\naugment = [true, false]\n')
    assert main(["matrix", "--config", str(cfg), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("todo  ")]
    assert len(lines) == 2 * 2 * 2  # noise x milestones x augment
    assert sum("milestones=(1,)  augment=False" in ln for ln in lines) == 2


@pytest.mark.parametrize("text, says", [
    ("foo=1", "'foo' is not a run setting"), ("lr", "give KEY=V1,V2"), ("lr=a", "'a' is not a float"),
    ("augment=maybe", "'maybe' is not a bool"), ("milestones=1,2", "sweep it in a --config file"),
])
def test_bad_sweeps_are_named(text, says):
    with pytest.raises(SpecError, match=says):
        parse_sweeps([text])


def test_a_swept_value_that_breaks_a_cell_names_the_cell():
    with pytest.raises(SpecError, match=r"seed 0/lr=-1.0: --lr must be > 0"):
        Grid.build("smoke", sweep={"lr": [-1.0]}).cells()
    with pytest.raises(SpecError, match="give a non-empty list"):
        Grid.build("smoke", sweep={"lr": []})

"""Plugins: the README's example trained for real, entry points, and contract violations."""
import csv
import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from robustbench_ols.cli import main
from robustbench_ols.common.errors import ContractError
from robustbench_ols.methods import METHODS, build_method, method_class

README = Path(__file__).resolve().parents[2] / "README.md"
RUN = ["run", "--dataset", "synthetic", "--model", "resnet8", "--epochs", "2", "--train-subset", "300",
       "--noise", "symmetric:0.2", "--device", "cpu", "--no-progress", "--attack", "none"]


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Audit your own smoothing method"):]
    code = re.search(r"```python\n(# my_smoothing\.py\n.*?)```", section, re.S)
    assert code, "the README's plugin section must hold the my_smoothing.py example"
    return code.group(1)


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for plugin modules; forgets them and their registry entries afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before_methods = METHODS.known()
    yield tmp_path
    for name, mod in list(sys.modules.items()):  # only the plugin modules written here
        if str(getattr(mod, "__file__", "") or "").startswith(str(tmp_path)):
            sys.modules.pop(name)
    for name in METHODS.known() - before_methods:
        METHODS.unregister(name)


def test_readme_example_trains_for_real(plugin_dir, tmp_path, capsys):
    (plugin_dir / "my_smoothing.py").write_text(readme_example())
    out = tmp_path / "out"
    assert main(RUN + ["--method", "my_smoothing:AnnealedLS:eps=0.3", "--out", str(out)]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    rec = json.loads((run_dir / "spec.json").read_text())
    assert rec["spec"]["method"] == "my_smoothing:AnnealedLS"
    assert rec["method"]["options"] == {"eps": 0.3}
    assert rec["method"]["citation"] == "example plugin from the robustbench_ols README"
    lines = (run_dir / "epochs.csv").read_text().splitlines()
    assert len(lines) == 3 and (run_dir / "DONE").exists()
    # The method really is the plugin: its loss at epoch 0 is LS with eps=0.3.
    m, _ = build_method("my_smoothing:AnnealedLS", {"eps": "0.3"})
    m.setup(type("I", (), {"epochs": 2})())
    z, y = torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    from robustbench_ols.data import Batch
    b = Batch(torch.zeros(4, 3, 32, 32), y, torch.arange(4))
    assert torch.allclose(m.loss(z, b, 0), torch.nn.functional.cross_entropy(z, y, label_smoothing=0.3))
    assert torch.allclose(m.loss(z, b, 1), torch.nn.functional.cross_entropy(z, y, label_smoothing=0.15))


def test_a_bad_option_value_is_exit_2_naming_the_method_and_option(plugin_dir, tmp_path, capsys):
    """The README example's SpecError, and a plugin whose __init__ raises anything else on a bad value: exit 2,
    the method and the option named, nothing written."""
    (plugin_dir / "my_smoothing.py").write_text(readme_example())
    (plugin_dir / "raising.py").write_text(
        "from robustbench_ols.methods import Method\n\n\nclass Raising(Method):\n    name = 'raising'\n\n"
        "    def __init__(self, *, tau: float = 1.0):\n        assert tau > 0, 'tau must be positive'\n"
        "        self.tau = tau\n")
    for method, words in (("my_smoothing:AnnealedLS:eps=1.5", ["annealed-ls: eps must be in [0, 1), got 1.5"]),
                          ("raising:Raising:tau=-1", ["'raising:Raising'", "tau=-1.0", "AssertionError",
                                                      "tau must be positive"])):
        out = tmp_path / method.split(":")[0]
        assert main(RUN + ["--method", method, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert all(w in err for w in words) and "Traceback" not in err, err
        assert not out.exists()


def test_entry_point_plugin_is_listed_and_runs(plugin_dir, tmp_path, capsys):
    (plugin_dir / "my_smoothing.py").write_text(readme_example())
    dist = plugin_dir / "my_smoothing_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-smoothing-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text('[robustbench_ols.methods]\nannealed-ls = my_smoothing:AnnealedLS\n')
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    assert "annealed-ls    [plugin] eps=0.2" in listing and "example plugin from the robustbench_ols README" in listing
    assert main(RUN + ["--method", "annealed-ls:eps=0.1", "--epochs", "1", "--out", str(tmp_path / "o")]) == 0


BROKEN = {
    "NotAMethod": ("class NotAMethod:\n    pass\n", "is not a class derived from robustbench_ols.methods.Method"),
    "BadHook": ("class BadHook(Method):\n    name = 'bad'\n    def loss(self, logits):\n        return logits.sum()\n",
                "hook loss(self, logits) cannot be called as loss(self, logits, batch, epoch)"),
    "PositionalOption": ("class PositionalOption(Method):\n    name = 'p'\n    def __init__(self, eps=0.1):\n"
                         "        self.eps = eps\n", "are not keyword-only with a default"),
}


@pytest.mark.parametrize("cls", sorted(BROKEN))
def test_static_contract_violations_name_method_and_rule(plugin_dir, cls):
    code, fragment = BROKEN[cls]
    (plugin_dir / "broken_static.py").write_text("from robustbench_ols.methods import Method\n\n" + code)
    with pytest.raises(ContractError) as e:
        method_class(f"broken_static:{cls}")
    assert f"method 'broken_static:{cls}'" in str(e.value) and fragment in str(e.value)
    assert "rule" in str(e.value)


RUNTIME = {
    "VectorLoss": ("def loss(self, logits, batch, epoch):\n        return F.cross_entropy(logits, batch.y, "
                   "reduction='none')\n", "the loss is (", "not a scalar tensor"),
    "FloatLoss": ("def loss(self, logits, batch, epoch):\n        return 1.0\n", "the loss is float", "0-d tensor"),
    "DetachedLoss": ("def loss(self, logits, batch, epoch):\n        return F.cross_entropy(logits, batch.y).detach()\n",
                     "the loss has no gradient", "rule"),
    "WrongReturn": ("def training_step(self, models, batch, epoch):\n        z = models[0](batch.x)\n"
                    "        return F.cross_entropy(z, batch.y), z\n", "returned tuple, not StepOutput", "rule"),
    "BadState": ("def loss(self, logits, batch, epoch):\n        return F.cross_entropy(logits, batch.y)\n"
                 "    def state_dict(self):\n        return [1, 2]\n", "state_dict() returned list", "returns a dict"),
}


@pytest.mark.parametrize("cls", sorted(RUNTIME))
def test_runtime_contract_violations_fail_the_run_with_the_rule(plugin_dir, tmp_path, capsys, cls):
    body, frag1, frag2 = RUNTIME[cls]
    (plugin_dir / "broken_runtime.py").write_text(textwrap.dedent(f"""\
        import torch.nn.functional as F
        from robustbench_ols.methods import Method

        class {cls}(Method):
            name = "{cls.lower()}"
            citation = "broken on purpose"

            """) + "    " + body)
    out = tmp_path / "out"
    assert main(RUN + ["--method", f"broken_runtime:{cls}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"method 'broken_runtime:{cls}'" in err and frag1 in err and frag2 in err
    (run_dir,) = out.iterdir()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and frag1 in status["reason"]
    assert not (run_dir / "DONE").exists()


def test_unknown_plugin_module_and_attribute(plugin_dir, capsys):
    assert main(RUN + ["--method", "no_such_module_xyz:Thing"]) == 2
    assert "cannot import module 'no_such_module_xyz'" in capsys.readouterr().err
    (plugin_dir / "empty_mod.py").write_text("")
    assert main(RUN + ["--method", "empty_mod:Thing"]) == 2
    assert "module 'empty_mod' has no attribute 'Thing'" in capsys.readouterr().err


SCATTERING = textwrap.dedent("""\
    import torch
    import torch.nn.functional as F
    from robustbench_ols.methods import Method

    class Scattering(Method):
        name = "scattering"
        citation = "a test method using Tensor.put_ (from epoch `first_epoch`, 0-based)"
        first_epoch = 0

        def loss(self, logits, batch, epoch):
            weights = torch.ones(len(batch.y), device=logits.device)
            if epoch >= self.first_epoch:
                first = torch.zeros(1, dtype=torch.long, device=logits.device)
                weights.put_(first, torch.ones(1, device=logits.device))
            return (F.cross_entropy(logits.float(), batch.y, reduction="none") * weights).mean()

    class LateScattering(Scattering):
        name = "late_scattering"
        first_epoch = 1
    """)


def test_deterministic_refuses_an_op_without_a_deterministic_kernel(plugin_dir, tmp_path, capsys):
    """--deterministic (issue 27): a method whose step uses an op torch has no deterministic kernel for (put_,
    on any device) fails the run with exit 2 naming the op and the way out; without the flag it trains."""
    (plugin_dir / "scattering.py").write_text(SCATTERING)
    out = tmp_path / "out"
    assert main(RUN + ["--method", "scattering:Scattering", "--deterministic", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--deterministic: put_ has no deterministic kernel" in err and "run without --deterministic" in err
    assert list(out.iterdir()) == []  # refused before an epoch was kept: nothing written
    assert torch.are_deterministic_algorithms_enabled()  # the flag was set in this process: set it back
    torch.use_deterministic_algorithms(False)
    assert main(RUN + ["--method", "scattering:Scattering", "--out", str(out)]) == 0


def test_deterministic_refusing_a_later_epoch_keeps_the_epochs_before_it(plugin_dir, tmp_path, capsys):
    """An op --deterministic refuses only from epoch 2 on: epoch 1's checkpoint is kept (nothing already written
    is lost), status.json says why, and the same command without the flag resumes from epoch 2."""
    (plugin_dir / "scattering.py").write_text(SCATTERING)
    out = tmp_path / "out"
    try:
        assert main(RUN + ["--method", "scattering:LateScattering", "--deterministic", "--out", str(out)]) == 2
    finally:
        torch.use_deterministic_algorithms(False)
    assert "--deterministic: put_ has no deterministic kernel" in capsys.readouterr().err
    (run_dir,) = out.iterdir()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["epoch"] == 2 and "put_" in status["reason"]
    assert [r["epoch"] for r in csv.DictReader((run_dir / "epochs.csv").open())] == ["1"]
    assert main(RUN + ["--method", "scattering:LateScattering", "--out", str(out)]) == 0
    sessions = json.loads((run_dir / "executions.json").read_text())
    assert [s["first_epoch"] for s in sessions] == [1, 2]
    assert [s["precision"]["deterministic"] for s in sessions] == [True, False]

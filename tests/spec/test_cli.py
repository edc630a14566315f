"""The CLI is one more entry to the same specs: its options and defaults come from the dataclasses, and a
command line gives the RunSpec and EvalSpec the Python API gives."""
import dataclasses
import shlex
from pathlib import Path

import pytest

from robustbench_ols import cli
from robustbench_ols.cli import commands
from robustbench_ols.cli.options import EVAL_FLAGS
from robustbench_ols.common.errors import SpecError
from robustbench_ols.spec import EvalSpec, ExecOptions, RunSpec


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


def test_every_spec_field_is_an_option_with_the_dataclass_default():
    args = vars(parse("run"))
    for f in dataclasses.fields(RunSpec):
        if not f.init or f.name in ("method_options", "noise_seed", "milestones"):  # in --method; = --seed; text "150,225"
            continue
        if f.name == "noisy_val":  # a flag with an optional share: absent is None, the spec's 0 (no split)
            assert args[f.name] is None and f.default == 0
            continue
        assert args[f.name] == f.default, f.name
    for f in dataclasses.fields(EvalSpec):
        if f.init and f.name != "attacks":  # --attack, repeatable; default: fgsm and pgd
            assert args[EVAL_FLAGS.get(f.name, f.name)] == f.default, f.name
    for f in dataclasses.fields(ExecOptions):
        if f.name != "progress_position":  # set by `rbols matrix` for its workers
            assert args[f.name] == f.default, f.name


def test_a_command_line_gives_the_api_spec():
    spec, ex = commands.spec_from_args(parse(
        "run", "--method", "ols:init=zeros", "--noise", "symmetric:0.4", "--epochs", "30", "--train-subset", "5000",
        "--milestones", "15,22", "--no-augment", "--device", "cpu", "--no-progress"))
    assert spec == RunSpec(method="ols", method_options=(("init", "zeros"),), noise="symmetric:0.4", epochs=30,
                           train_subset=5000, milestones=(15, 22), augment=False)
    assert ex == ExecOptions(device="cpu", progress=False)
    ev = commands.eval_spec_from_args(parse("run", "--attack", "pgd:steps=5", "--attack", "fgsm:eps=2/255", "--bins", "10",
                                       "--attack-examples", "100", "--no-cifar10h"))
    assert ev == EvalSpec(attacks=("pgd:steps=5", "fgsm:eps=2/255"), n_bins=10, attack_examples=100, cifar10h=False)
    assert commands.eval_spec_from_args(parse("run", "--attack", "none")).attacks == ()


def test_matrix_options_override_only_what_is_given():
    args = parse("matrix", "--preset", "smoke", "--epochs", "3", "--bins", "5", "--out", "x")
    grid, cells, ev, ex = commands.grid_from_args(args)
    assert {c.epochs for c in cells} == {3} and {c.batch_size for c in cells} == {100}  # the preset's batch size
    assert ev.n_bins == 5 and ev.attack_examples == 50 and ex == ExecOptions()


def test_bad_numbers_name_the_option():
    with pytest.raises(SpecError, match="--milestones"):
        commands.spec_from_args(parse("run", "--milestones", "a,b"))
    with pytest.raises(SpecError, match="--seeds"):
        commands.grid_from_args(parse("matrix", "--preset", "smoke", "--seeds", "0,x"))


def test_readme_python_example_is_command_one():
    """The README's Python example says it is the same run as the quick start's command 1: same run_id."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    bash = readme.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    line = next(ln for ln in bash.splitlines() if "rbols run " in ln)
    argv = shlex.split(line.split("rbols run ", 1)[1])
    spec, _ = commands.spec_from_args(cli.build_parser().parse_args(["run", *argv]))
    block = readme.split("```python\nfrom robustbench_ols import ExecOptions, RunSpec, execute\n", 1)[1]
    statement = block.split("result = ", 1)[0]
    scope = {"RunSpec": RunSpec}
    exec(statement, scope)
    assert scope["spec"].run_id == spec.run_id


def test_help_of_the_package_lists_its_public_api():
    import pydoc

    import robustbench_ols
    text = pydoc.render_doc(robustbench_ols, renderer=pydoc.plaintext)
    for name in robustbench_ols.__all__:
        if name != "__version__":
            assert f"{name}(" in text or f"class {name}" in text, name


def test_rbols_help_names_every_command():
    text = cli.build_parser().format_help()
    for command in ("run", "matrix", "report", "audit", "eval", "score", "export", "repair", "methods", "models",
                    "data"):
        assert command in text.split("{", 1)[1].split("}", 1)[0].split(","), command
    assert "export" in text.split("\n\n")[1]  # the description names it too

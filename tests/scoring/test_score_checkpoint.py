"""`rbols score`: a checkpoint trained elsewhere, scored like a run. Its record equals the one the suite wrote
for the same weights; other checkpoint layouts load; a file that is not a fitting state dict is exit 2."""
import json

import torch

from robustbench_ols.cli import main
from robustbench_ols.models import create_model

RUN = ["--dataset", "synthetic", "--attack", "fgsm", "--attack", "pgd:steps=2", "--attack-examples", "50",
       "--threads", "1", "--device", "cpu", "--no-progress"]


def test_a_checkpoint_scores_like_its_run(tmp_path, capsys):
    assert main(["run", *RUN, "--model", "resnet8", "--train-subset", "300", "--batch-size", "100", "--epochs", "2",
                 "--out", str(tmp_path / "runs")]) == 0
    run_dir = next((tmp_path / "runs").glob("*/DONE")).parent
    own = json.loads(next((run_dir / "evals").glob("*.json")).read_text())
    capsys.readouterr()

    # a plain state dict saved from a DataParallel wrapper ("module." keys), as another code base would
    weights = torch.load(run_dir / "model.pt", weights_only=True)["models"][0]
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}}, tmp_path / "theirs.pt")
    assert main(["score", "--checkpoint", str(tmp_path / "theirs.pt"), "--model", "resnet8", *RUN,
                 "--out", str(tmp_path / "scores")]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    rec = json.loads(open(path).read())
    assert rec["eval_id"] == own["eval_id"] and rec["eval"] == own["eval"]
    drop = ("eval_seconds",)
    assert {k: v for k, v in rec["metrics"].items() if k not in drop} == \
        {k: v for k, v in own["metrics"].items() if k not in drop}
    source = json.loads((tmp_path / "scores" / rec["run_id"] / "source.json").read_text())
    assert source["model"] == "resnet8" and len(source["sha256"]) == 64
    # the same checkpoint again: the record is kept
    assert main(["score", "--checkpoint", str(tmp_path / "theirs.pt"), "--model", "resnet8", *RUN,
                 "--out", str(tmp_path / "scores")]) == 0
    assert "already scored" in capsys.readouterr().out


def test_checkpoints_that_do_not_fit(tmp_path, capsys):
    torch.save(create_model("resnet20", 10).state_dict(), tmp_path / "r20.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    torch.save({"epoch": 3}, tmp_path / "no_weights.pt")
    for f, says in (("r20.pt", "does not fit --model resnet8 with 10 classes"),
                    ("text.pt", "cannot be read by torch.load"), ("no_weights.pt", "holds no state dict"),
                    ("missing.pt", "no such file")):
        assert main(["score", "--checkpoint", str(tmp_path / f), "--model", "resnet8", *RUN,
                     "--out", str(tmp_path / "scores")]) == 2
        assert says in capsys.readouterr().err, f
    assert not (tmp_path / "scores").exists()

"""benchmarks/gpu_check.sh, the script a GPU session runs, on its CPU path with tiny sizes: both runs
(fp32 and --amp) finish, their records are complete, the throughput lines are printed, and the device check
(device_check.py) finds the CPU's batches, resumes bit for bit and measures packed workers (and one compiled)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_cpu_path(tmp_path, real_data):
    data = str(real_data)
    env = {**os.environ, "RBOLS_DATA": str(Path(data).resolve()), "DEVICE": "cpu", "MODEL": "resnet8",
           "SUBSET": "300", "ATTACK_EXAMPLES": "20", "BARE_STEPS": "2", "OUT": str(tmp_path / "runs"),
           "PYTHON": sys.executable, "DEVICE_CHECK": "--models resnet8 --workers 1,2 --precisions fp32,bf16 --steps 3 "
           "--batch 32 --resume-model resnet8 --resume-subset 300 --resume-epochs 6"}
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "gpu_check: records complete" in p.stdout
    lines = [ln for ln in p.stdout.splitlines() if "training images/s" in ln and not ln.startswith("|")]
    assert len(lines) == 2 and any("bf16 autocast" in ln for ln in lines) and any("fp32" in ln for ln in lines)
    assert all("x a bare loop" in ln and "PGD-20 error" in ln for ln in lines)
    check = json.loads((tmp_path / "runs" / "device_check" / "device_check.json").read_text())
    assert check["same_batches_as_cpu"] is True and check["deterministic_resume_exact"] is True
    assert [(r["precision"], r["workers"]) for r in check["packing"]] == [("fp32", 1), ("fp32", 2), ("bf16", 1),
                                                                          ("bf16", 2), ("bf16+compile", 1)]
    assert all(r["images_per_s"] > 0 and r["gpu_busy"] is None for r in check["packing"])
    md = (tmp_path / "runs" / "device_check" / "device_check.md").read_text()
    assert "| resnet8 | fp32 | 2 |" in md and "| resnet8 | bf16+compile | 1 |" in md
    assert "bf16+compile / bf16 (--compile's gain): resnet8:" in md
    # a record taken away is reported, exit 1
    (run,) = [d for d in (tmp_path / "runs").iterdir() if (d / "DONE").exists()][:1]
    (run / "metrics.json").unlink()
    q = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "runs"),
                        "--device", "cpu", "--model", "resnet8", "--bare-steps", "2"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert q.returncode == 1 and "INCOMPLETE" in q.stderr

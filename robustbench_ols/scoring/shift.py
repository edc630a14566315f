"""Error and calibration under corruption shift (`--shift corruptions`): the model scored on generated
CIFAR-10-C-style corruptions of a fixed, class-balanced test subset (data/corruptions.py says what they are and
are not), per corruption and severity, and their mean over the corruptions and severities scored.

Per (corruption, severity): error, ECE (the record's bins), smooth ECE (relplot, without its bootstrap interval)
and NLL, in `evals/<eval_id>.corruptions.csv`; the record carries their means (`corr_err`, `corr_ece`,
`corr_smece`, `corr_nll`, equal weight per corruption and severity, as RobustBench and TorchUncertainty average
CIFAR-10-C), the clean error of the same subset (`corr_clean_err`) and the seconds scoring and any one-time build
took (`corr_seconds`, `corr_build_seconds`).
"""
from __future__ import annotations

import numpy as np
import torch

from robustbench_ols.common.errors import SpecError
from robustbench_ols.common.provenance import Timer
from robustbench_ols.data import class_balanced_subset
from robustbench_ols.data.corruptions import CORRUPTIONS, cache_folder, corrupted, describe, package_version
from robustbench_ols.models.inference import predict_logits
from robustbench_ols.scoring.calibration import ece, nll
from robustbench_ols.scoring.calibration.modern import smooth_ece, top_label

SUBSET_SEED = 0  # the corrupted subset's seed: fixed, so every run of a dataset shares one cached set


def score_corruptions(model, test_x: torch.Tensor, test_y: torch.Tensor, ev, *, data_root, batch_size: int,
                      channels_last: bool) -> tuple[dict, list, str]:
    """(the record's corr_* figures, the per-(corruption, severity) rows, a note) for `model` on uint8 `test_x`."""
    timer, built = Timer(), {}
    y_all = test_y.cpu().numpy()
    k, n = len(np.unique(y_all)), ev.shift_examples
    if not k <= n <= len(y_all):
        raise SpecError(f"--shift-examples {n} must lie between the number of classes ({k}) and the test set size "
                        f"({len(y_all)})")
    idx = class_balanced_subset(y_all, n, SUBSET_SEED)
    images = test_x[torch.as_tensor(idx, device=test_x.device)].cpu()
    folder = cache_folder(test_x.cpu().numpy(), n, SUBSET_SEED, data_root)
    describe(folder, idx, SUBSET_SEED)
    y = torch.as_tensor(y_all[idx])

    def figures(x_uint8: torch.Tensor) -> dict:
        z = torch.cat(list(predict_logits(model, x_uint8.to(test_x.device), batch_size=batch_size,
                                          channels_last=channels_last))).cpu()
        p = z.double().softmax(1)
        conf, correct = top_label(p.numpy(), y.numpy())
        return {"err": float(1 - correct.mean()), "ece": ece(p, y, n_bins=ev.n_bins),
                "smece": smooth_ece(conf, correct), "nll": nll(p, y)}

    rows = []
    hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    for name in ev.corruptions or CORRUPTIONS:
        arrays = corrupted(hwc, folder, name, SUBSET_SEED, on_built=lambda c, s: built.__setitem__(c, s))
        for s in ev.severities:
            rows.append({"corruption": name, "severity": s,
                         **figures(torch.from_numpy(arrays[s - 1]).permute(0, 3, 1, 2).contiguous())})
    metrics = {f"corr_{key}": float(np.mean([r[key] for r in rows])) for key in ("err", "ece", "smece", "nll")}
    metrics.update(corr_clean_err=figures(images)["err"], corr_seconds=timer.seconds(),
                   corr_build_seconds=float(sum(built.values())))
    names = "all 15 corruptions" if not ev.corruptions else ", ".join(ev.corruptions)
    note = (f"generated CIFAR-10-C-style corruptions, NOT the official CIFAR-10-C release: imagecorruptions-imaug "
            f"{package_version()} (ImageNet-C parameters), {names} at severities "
            f"{', '.join(map(str, ev.severities))}, on a class-balanced test subset of {n} images "
            f"(seed {SUBSET_SEED}), cached in <data root>/{folder.parent.name}/{folder.name}"
            + (f"; built now: {', '.join(built)} ({sum(built.values()):.0f} s)" if built else ""))
    return metrics, rows, note

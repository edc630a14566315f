"""Weights & Biases: W&B run id = run_id, files under `<root>/wandb`; offline unless logged in."""
from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from robustbench_ols.trackers.records import PROJECT


def _wandb_logged_in() -> bool:
    """Whether W&B credentials are configured here (environment or ~/.netrc), without asking the server."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandB:
    name = "wandb"
    _EXIT = {"finished": 0, "interrupted": 255, "failed": 1}

    def __init__(self, run_id: str, hparams: dict, root: Path):
        import wandb
        self.wandb = wandb
        mode = None if os.environ.get("WANDB_MODE") else "online" if _wandb_logged_in() else "offline"
        root.mkdir(parents=True, exist_ok=True)
        # console off: the run's progress bars and messages stay as they are
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or PROJECT, id=run_id, name=run_id,
                              dir=str(root), config=hparams, resume="allow", mode=mode, reinit="create_new",
                              settings=wandb.Settings(console="off"))
        self.run_id = run_id
        self.first_step = self.run.starting_step  # online resume: the steps the server has are skipped

    def epoch(self, values: dict, epoch: int) -> None:
        if epoch >= self.first_step:
            self.run.log(values, step=epoch)

    def finish(self, scores: dict, texts: dict, files: list, step: int) -> None:
        self.run.summary.update({**scores, **texts})
        art = self.wandb.Artifact(f"run-{self.run_id}", type="rbols-run")
        for path, folder in files:
            art.add_file(str(path), name=f"{folder}/{path.name}")
        self.run.log_artifact(art)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=self._EXIT[status])

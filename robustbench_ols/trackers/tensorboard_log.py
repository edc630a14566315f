"""TensorBoard through torch.utils.tensorboard: one log directory per run, `<root>/tensorboard/<run_id>`."""
from __future__ import annotations

from pathlib import Path


class TensorBoard:
    name = "tensorboard"

    def __init__(self, run_id: str, hparams: dict, root: Path):
        from torch.utils.tensorboard import SummaryWriter
        self._writer_class = SummaryWriter
        self.log_dir = root / "tensorboard" / run_id
        self.hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()}
        self.writer = None

    def _at(self, step: int):
        """The writer, opened at this session's first step: its purge_step makes TensorBoard drop what earlier
        sessions (an interrupted run, an earlier replay) wrote from that step on, so each epoch reads once."""
        if self.writer is None:
            from torch.utils.tensorboard.summary import hparams
            self.writer = self._writer_class(str(self.log_dir), purge_step=step)
            self.writer.file_writer.add_summary(hparams(self.hparams, {})[1], step)  # session start: the spec
        return self.writer

    def epoch(self, values: dict, epoch: int) -> None:
        w = self._at(epoch)
        for k, v in values.items():
            w.add_scalar(k, v, epoch)
        w.flush()

    def finish(self, scores: dict, texts: dict, files: list, step: int) -> None:
        from matplotlib.image import imread
        from torch.utils.tensorboard.summary import hparams
        w = self._at(step)
        for k, v in scores.items():
            w.add_scalar(f"final/{k}", v, step)
        experiment, _, end = hparams(self.hparams, {f"final/{k}": v for k, v in scores.items()})
        w.file_writer.add_summary(experiment, step)  # the HParams dashboard's columns: the final scores
        w.file_writer.add_summary(end, step)
        for path, folder in files:  # TensorBoard keeps no files: the figures as images
            if folder == "figures" and path.suffix == ".png":
                w.add_image(f"figures/{path.stem}", imread(path), step, dataformats="HWC")
        w.flush()

    def close(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()

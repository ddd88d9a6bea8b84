"""tensorboard=true (or tracking=tensorboard): event files in <run dir>/tensorboard.

  tensorboard/          per-epoch scalars (every metrics.csv column, step = epoch), the augment preview and the
                        confusion matrix as images, and the hparams plugin's summary (the command line's keys ->
                        test and best validation accuracy), which compares a sweep's jobs
  tensorboard/steps/    per optimizer step: train/loss (the step's mean loss) and train/lr (the lr it took)

A resumed run drops the events at and after the epoch (step) it continues from, so nothing is counted twice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from imgcls_cli.tracking.base import RunInfo, Tracker, flatten, numbers

IMAGES = {"augment_preview": Path("plots") / "augment_preview.png",
          "confusion_matrix": Path("eval") / "confusion_matrix.png"}
HPARAM_METRICS = ("test_accuracy", "best_val_accuracy")


def _writer(folder: Path, purge_step: int | None) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(folder), purge_step=purge_step)


def hparams_of(info: RunInfo) -> dict[str, Any]:
    """The hparams plugin's columns: model, dataset and every key the command line set (a sweep's varying keys)."""
    flat = flatten(info.config)
    values = {"model": info.model, "dataset": info.dataset}
    for key in info.hparams:
        value = flat.get(key, next((v for k, v in flat.items() if k.startswith(f"{key}.")), None))
        if key in flat or value is not None:
            values[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return values


class TensorBoardTracker(Tracker):
    name = "tensorboard"
    wants_steps = True

    def __init__(self, info: RunInfo) -> None:
        super().__init__(info)
        self.folder = info.run_dir / "tensorboard"
        self.epochs: Any = None  # created at the first event, when the first epoch (step) logged is known
        self.steps: Any = None

    def log_step(self, step: int, values: Mapping[str, float]) -> None:
        if self.steps is None:
            self.steps = _writer(self.folder / "steps", step)
        for key, value in values.items():
            self.steps.add_scalar(key, value, step)

    def log_epoch(self, epoch: int, row: Mapping[str, Any]) -> None:
        if self.epochs is None:
            self.epochs = _writer(self.folder, epoch)
        for key, value in numbers({k: v for k, v in row.items() if k != "epoch"}).items():
            self.epochs.add_scalar(key, value, epoch)
        self.epochs.flush()

    def end(self, status: str, summary: Mapping[str, Any], test: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        board = self.epochs or _writer(self.folder, None)
        step = int(summary.get("epochs_completed") or 0)
        for tag, path in IMAGES.items():
            image = _read_png(self.info.run_dir / path)
            if image is not None:
                board.add_image(tag, image, step, dataformats="HWC")
        metrics = {f"hparam/{k}": v for k, v in numbers({k: summary.get(k) for k in HPARAM_METRICS}).items()}
        for summary_pb in hparams(hparams_of(self.info), metrics):
            board.file_writer.add_summary(summary_pb)
        for key, value in metrics.items():
            board.add_scalar(key, value, step)
        board.close()
        if self.steps is not None:
            self.steps.close()


def _read_png(path: Path) -> Any:
    """An RGB uint8 array (height, width, 3), or None when the file is not there."""
    if not path.is_file():
        return None
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

"""Models from checkpoints, and `imgcls eval`: a checkpoint scored on a dataset split."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imgcls_cli import console as out
from imgcls_cli.checkpoint import load_checkpoint
from imgcls_cli.data.datasets import SPLITS, load_dataset
from imgcls_cli.data.loader import StreamLoader, make_loader, read_ids, resolve_workers
from imgcls_cli.engine.device import autocast, resolve_device, resolve_precision, use_channels_last
from imgcls_cli.engine.fit import predict_logits
from imgcls_cli.engine.reports import write_eval_reports, write_skipped_files
from imgcls_cli.errors import UserError
from imgcls_cli.models import MODELS, create_model

log = logging.getLogger("imgcls")
# Dataset keys that choose the splits: set on the eval command line, they win over the run's splits.csv.
SPLIT_KEYS = {"root", "file", "val_fraction", "test_fraction", "folds", "fold", "splits_file"}


def model_from_checkpoint(ckpt: dict[str, Any], device: torch.device) -> nn.Module:
    """Rebuild the registered model with its saved kwargs and load the weights (eval mode)."""
    spec = ckpt["model"]
    if not isinstance(spec, dict) or spec.get("name") not in MODELS:
        raise UserError(f"the checkpoint names a model this imgcls does not have: {spec.get('name')!r}.")
    model = create_model(spec["name"], for_checkpoint=True, **spec.get("kwargs", {}))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"the checkpoint's weights do not fit model '{spec['name']}': {first}") from None
    return model.to(device).eval()


def dataset_for_checkpoint(ckpt: dict[str, Any], dataset_cfg: dict[str, Any] | None,
                           dataset_keys: list[str] | None = None,
                           checkpoint: str | Path | None = None) -> dict[str, Any]:
    """The dataset config to evaluate on, converted to the checkpoint's input channels and size.

    The checkpoint's own dataset keeps its training settings (split fractions, seed) except the keys the user
    set (dataset_keys), so split=test is the same test split; another dataset comes as configured.
    """
    trained = ckpt["config"]["dataset"]
    # +dataset.KEY=VALUE alone (no dataset=NAME) changes a key of the checkpoint's own dataset.
    same = not dataset_cfg or dataset_cfg.get("name", trained.get("name")) == trained.get("name")
    if dataset_cfg is None:
        cfg = dict(trained)
    elif same:
        cfg = {**trained, **{k: dataset_cfg[k] for k in (dataset_keys or []) if k in dataset_cfg}}
    else:
        cfg = dict(dataset_cfg)
    cfg["channels"], cfg["image_size"] = ckpt["input"]["channels"], ckpt["input"]["size"]
    # The training run's splits.csv: the same images in each split, even where files were added since.
    splits_file = Path(checkpoint).resolve().parent.parent / "splits.csv" if checkpoint else None
    if same and splits_file and splits_file.is_file() and not set(dataset_keys or []) & SPLIT_KEYS:
        cfg["splits_file"] = str(splits_file)
    return cfg


def run_eval(
    checkpoint: str | Path,
    run_dir: str | Path,
    *,
    dataset_cfg: dict[str, Any] | None = None,
    dataset_keys: list[str] | None = None,
    split: str = "test",
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    topk: int = 5,
    num_workers: Any = "auto",
) -> dict[str, Any]:
    """Evaluate a checkpoint on a split; write metrics.json and the other reports into run_dir."""
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, not '{split}'.")
    ckpt = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    train_cfg = ckpt["config"]
    batch_size = batch_size or int(train_cfg.get("eval_batch_size", 256))
    if batch_size < 1:
        raise UserError(f"batch_size must be a positive whole number, not {batch_size}.")
    model = model_from_checkpoint(ckpt, dev)
    ds_cfg = dataset_for_checkpoint(ckpt, dataset_cfg, dataset_keys, checkpoint)
    bundle = load_dataset(ds_cfg, int(train_cfg.get("seed", 0)))
    write_skipped_files(Path(run_dir), bundle.skipped, log)
    if bundle.num_classes != len(ckpt["classes"]):
        raise UserError(f"dataset '{bundle.name}' has {bundle.num_classes} classes but the checkpoint was trained "
                        f"on {len(ckpt['classes'])}; evaluate it on data with the same classes.")
    data = bundle.splits[split]
    if len(data) == 0:
        raise UserError(f"the {split} split of dataset '{bundle.name}' is empty; choose another split=.")
    inp = ckpt["input"]
    channels_last = use_channels_last(train_cfg.get("channels_last", "auto"), dev)  # as in training: same numbers
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = make_loader(data.images, data.labels, batch_size, inp["mean"], inp["std"], device=dev,
                         num_workers=resolve_workers(num_workers), channels_last=channels_last)
    logits, targets = predict_logits(model, loader, lambda: autocast(dev, prec))
    probs = torch.softmax(logits, 1).numpy()
    ids = read_ids(loader, data.ids)
    if isinstance(loader, StreamLoader) and loader.skipped:  # files that stopped decoding since training
        write_skipped_files(Path(run_dir), [*bundle.skipped, *sorted(loader.skipped.items())], log)
    metrics = write_eval_reports(run_dir, probs, targets.numpy(), list(ckpt["classes"]), ids,
                                 bundle.id_column, topk,
                                 extra={"split": split, "checkpoint": str(checkpoint), "epoch": ckpt.get("epoch")})
    rows = [("checkpoint", str(checkpoint)), ("dataset", f"{bundle.name} ({split}, {len(data)} images)")]
    rows += [(k, v) for k, v in metrics.items() if k not in ("num_samples",)]
    out.show(out.table("Evaluation", ["metric", "value"], rows))
    return metrics

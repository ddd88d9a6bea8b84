"""The parts of a training run, built from the dataset and the settings: the model (its input size and
normalization), the loss, the loaders, the batch-norm calibration sample, the domain adversary."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from imgcls_cli.data.augment import BatchAugment
from imgcls_cli.data.datasets import DatasetBundle, load_dataset
from imgcls_cli.data.loader import DeviceLoader, make_loader
from imgcls_cli.engine import distributed, precise_bn
from imgcls_cli.engine.domain import DomainAdversary, cycle, target_dataset_config
from imgcls_cli.errors import UserError, as_float
from imgcls_cli.models import ModelSpec, create_model
from imgcls_cli.models import normalization as model_norm
from imgcls_cli.plots import plot_augment_preview
from imgcls_cli.specs.loop import BNRecalibrateSpec
from imgcls_cli.specs.task import TaskSpec
from imgcls_cli.specs.train import TrainSpec

log = logging.getLogger("imgcls")
MIX_STREAM = 500_009  # offsets the MixUp/CutMix generator's seed from the loader's
TARGET_STREAM = 700_001  # offsets the domain-adaptation target loader's seed from the source loader's
AUTO_BATCH, AUTO_MIN_BATCH, AUTO_STEPS = 64, 16, 16


def auto_batch_size(n_train: int, world_size: int = 1) -> int:
    """batch_size=auto: 64 images a step, fewer when the training split is small, so that an epoch takes about
    AUTO_STEPS optimizer steps (never fewer than 16 images a step). A quick run on a few hundred images otherwise
    takes a handful of steps an epoch, too few to learn from."""
    per_rank = -(-n_train // world_size)
    return max(AUTO_MIN_BATCH, min(AUTO_BATCH, per_rank // AUTO_STEPS))


def model_input(bundle: DatasetBundle) -> dict[str, Any]:
    return {"channels": bundle.channels, "size": bundle.image_size, "mean": bundle.mean, "std": bundle.std}


def build_model(model: ModelSpec, bundle: DatasetBundle) -> tuple[nn.Module, str, dict[str, Any]]:
    """The configured model for this dataset: its channels, size and classes flow into the builder."""
    kwargs = {**model.kwargs, "num_classes": bundle.num_classes, "in_channels": bundle.channels,
              "image_size": bundle.image_size}
    return create_model(model.name, **kwargs), model.name, kwargs


def log_class_counts(bundle: DatasetBundle) -> None:
    labels = bundle.splits["train"].labels
    multilabel = labels.ndim == 2
    counts = (labels.sum(0).long() if multilabel else torch.bincount(labels, minlength=bundle.num_classes)).tolist()
    sizes = ", ".join(f"{s} {len(bundle.splits[s])}" for s in bundle.splits)
    log.info(f"dataset {bundle.name}: {bundle.num_classes} classes, {bundle.channels}x{bundle.image_size}x"
             f"{bundle.image_size}, {sizes}")
    log.info(f"train images per {'label' if multilabel else 'class'}: "
             + ", ".join(f"{c} {n}" for c, n in zip(bundle.classes, counts)))


def model_normalization(model: ModelSpec, dataset_cfg: dict[str, Any], bundle: DatasetBundle,
                        init: dict[str, Any] | None) -> None:
    """Pretrained weights bring their own mean/std (init=PATH's, unless dataset.mean/std are set, or torchvision's);
    a 1-channel dataset takes the mean over RGB."""
    if init is not None:
        given = dataset_cfg.get("mean") is not None
        stats = None if given else (init["input"]["mean"], init["input"]["std"])
    else:
        stats = model_norm(model.name, dict(model.kwargs))
    if stats is None:
        return
    mean, std = ([float(sum(v) / len(v))] * bundle.channels if len(v) != bundle.channels else list(map(float, v))
                 for v in stats)
    bundle.mean, bundle.std = mean, std
    log.info(f"normalization from the {'init checkpoint' if init else 'model weights'}: mean {mean}, std {std}")


def drop_remainder(n: int, batch_size: int, world_size: int = 1) -> bool:
    """Whether an epoch leaves out its last, shorter batch: only when it is under half a batch (a batch of a few
    images would give batch norm noisy statistics). A small training set (a quick run) thus trains on all of its
    images every epoch, instead of losing up to a batch of them."""
    per_rank = -(-n // world_size)
    return per_rank % batch_size < max(batch_size / 2, 2)


def class_weights(dataset_cfg: dict[str, Any], labels: torch.Tensor, classes: list[str]) -> torch.Tensor | None:
    """dataset.class_weights: null (none), auto (inverse frequency, n / (K * n_c), mean 1 over samples) or a list."""
    setting = dataset_cfg.get("class_weights")
    if setting is None:
        return None
    k = len(classes)
    if setting == "auto" and labels.ndim == 2:  # multilabel: each label's negatives over its positives
        from imgcls_cli.multilabel.losses import pos_weight_from

        weights = pos_weight_from(labels).float()
    elif setting == "auto":
        counts = torch.bincount(labels, minlength=k).double()
        weights = (len(labels) / (k * counts.clamp_min(1))).float()
    elif isinstance(setting, (list, tuple)):
        weights = torch.tensor([as_float(w, "dataset.class_weights") for w in setting], dtype=torch.float32)
        if len(weights) != k or (weights < 0).any() or weights.sum() <= 0:
            raise UserError(f"dataset.class_weights must be auto or {k} non-negative numbers (one per class), "
                            f"not {list(setting)}.")
    else:
        raise UserError(f"dataset.class_weights must be null, auto or a list of {k} numbers, not '{setting}'.")
    log.info("class weights in the loss: " + ", ".join(f"{c} {w:.3g}" for c, w in zip(classes, weights.tolist())))
    return weights


def build_loss(weights: torch.Tensor | None, smoothing: float, task: TaskSpec | None = None) -> nn.Module:
    """multiclass: cross-entropy against y(1 - a) + a/K (label smoothing a), class indices or soft (MixUp/CutMix)
    targets, each sample weighted by its class weight. multilabel: the loss group's bce or asl over multi-hot targets,
    the weights as each label's pos_weight."""
    if task is not None and task.multilabel:
        from imgcls_cli.multilabel.losses import LOSSES

        return LOSSES.get(task.loss)(pos_weight=weights, smoothing=smoothing, gamma_pos=task.gamma_pos,
                                     gamma_neg=task.gamma_neg, clip=task.clip)
    return nn.CrossEntropyLoss(weight=weights, label_smoothing=smoothing)


def sampler_weights(dataset_cfg: dict[str, Any], labels: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """dataset.sampler=balanced: each training image drawn with probability 1 / (K * n_its_class), so every
    class is drawn equally often; null: shuffle, each image once an epoch."""
    setting = dataset_cfg.get("sampler")
    if setting is None:
        return None
    if setting != "balanced":
        raise UserError(f"dataset.sampler must be null or balanced, not '{setting}'.")
    counts = torch.bincount(labels, minlength=num_classes).double()
    log.info("sampler: balanced (every class drawn equally often, with replacement)")
    return 1.0 / counts[labels.cpu()]


def write_augment_preview(loader: DeviceLoader, mixer: Any, bundle: DatasetBundle, path: Path) -> None:
    """plots/augment_preview.png: the first training batch as augmented (and mixed), with its labels.

    It is drawn from epoch 0, which training never uses, so the preview changes no number of the run.
    """
    loader.set_epoch(0)
    x, y = next(iter(loader))
    labels: torch.Tensor = y
    if mixer is not None:
        x, labels = mixer(x, y, torch.Generator().manual_seed(MIX_STREAM))
    plot_augment_preview(x[:32].float().cpu(), labels[:32].cpu(), bundle.classes, path, mean=bundle.mean,
                         std=bundle.std)


def bn_calibration_loader(bn: BNRecalibrateSpec, model: nn.Module, bundle: DatasetBundle, batch_size: int,
                          seed: int, shard: tuple[int, int], loader_args: dict[str, Any]) -> DeviceLoader | None:
    """The fixed sample of training images (no augmentation) batch-norm statistics are recomputed over, or None
    when they never are (bn_recalibrate=false, or a model without batch norm)."""
    if bn.when is False or not precise_bn.norm_layers(model):
        return None
    train = bundle.splits["train"]
    positions = precise_bn.sample_positions(len(train), bn.images, seed)
    images = train.images[positions] if train.in_memory else train.images.take(positions.numpy())
    per_rank = -(-len(positions) // shard[1])
    args = {**loader_args, "num_workers": min(loader_args["num_workers"], 2)}  # a small pass: few workers
    batches = make_loader(images, train.labels[positions], max(1, min(batch_size, per_rank)), bundle.mean,
                          bundle.std, drop_last=True, shard=shard, pad_shards=True, **args)
    when = "after every epoch" if bn.when is True else f"after each epoch while fewer than {precise_bn.AUTO_STEPS} " \
                                                      "optimizer steps are taken"
    log.info(f"bn_recalibrate={'true' if bn.when is True else bn.when}: batch-norm statistics recomputed over "
             f"{len(positions)} training images {when} (what validation, best.pt and last.pt use)")
    return batches


def check_distributed(ctx: distributed.Dist, spec: TrainSpec) -> None:
    """What data-parallel training does not combine with, refused in one line."""
    if not ctx.enabled:
        return
    tuning = spec.finetune
    refused = {"domain.target": spec.domain is not None, "on_nan=skip_batch": spec.on_nan == "skip_batch",
               "finetune.unfreeze_epoch": tuning.freeze == "encoder" and tuning.unfreeze_epoch is not None}
    for what, found in refused.items():
        if found:
            raise UserError(f"{what} is not supported in data-parallel training ({ctx.world_size} processes): "
                            "train it in one process.")


def sum_of(penalties: list[Callable[[], torch.Tensor]]) -> Callable[[], torch.Tensor] | None:
    """One penalty term out of several (None when there are none)."""
    if len(penalties) <= 1:
        return penalties[0] if penalties else None
    return lambda: torch.stack([p() for p in penalties]).sum()


def compiled(model: nn.Module, enabled: bool) -> nn.Module:
    """compile=true: torch.compile(model) for training and validation (the first steps pay the compilation)."""
    if not enabled:
        return model
    log.info("compile=true: torch.compile compiles the model in the first steps")
    return torch.compile(model)


def domain_adversary(spec: TrainSpec, augment: BatchAugment, bundle: DatasetBundle, model: nn.Module,
                     batch_size: int, batches_per_epoch: int,
                     loader_args: dict[str, Any]) -> tuple[DomainAdversary, DeviceLoader | None]:
    """domain.target's data: its train split's images (never its labels) feed the domain classifier; its test
    split, when it has the source's classes, gives the target accuracy of each epoch."""
    options, seed = spec.domain, spec.seed
    target_cfg = target_dataset_config(options, spec.config["dataset"], bundle.channels, bundle.image_size)
    target = load_dataset(target_cfg, seed)
    train = target.splits["train"]
    if len(train) < batch_size:
        raise UserError(f"domain.target={options.target} has {len(train)} training images, fewer than "
                        f"batch_size={batch_size}.")
    # The source's normalization: at test time the model sees target images normalized as in training.
    batches = make_loader(train.images, train.labels, batch_size, bundle.mean, bundle.std, shuffle=True,
                          drop_last=True, augment=augment, seed=seed + TARGET_STREAM, **loader_args)
    test = target.splits["test"]
    scored = sorted(target.classes) == sorted(bundle.classes) and len(test) > 0
    target_eval = None
    if scored:  # the same class names, maybe in another order: the target's labels as the source's indices
        to_source = torch.tensor([bundle.classes.index(c) for c in target.classes])
        target_eval = make_loader(test.images, to_source[test.labels], spec.eval_batch_size,
                                  bundle.mean, bundle.std, **loader_args)
    log.info(f"domain adaptation: target {target.name} ({len(train)} unlabelled training images"
             f"{f', {len(test)} test images for the target accuracy' if scored else '; no target accuracy: its classes differ'}"
             f"), lambda {options.strength}{' ramped' if options.ramp else ''}")
    adversary = DomainAdversary(model, bundle.num_classes, cycle(batches, 1), options, spec.epochs * batches_per_epoch,
                                loader_args["device"])
    return adversary, target_eval

"""Everything a training run builds before its first epoch, in the order that fixes its random numbers: the device
and data-parallel job, the resume state, the seeds, the data, the model, the loaders, the optimizer and schedule,
the loss, and the TrainState with its features registered (and loaded from last.pt on resume)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from imgcls_cli.cores import resolve_workers
from imgcls_cli.data.augment import BatchAugment, build_augment
from imgcls_cli.data.datasets import DatasetBundle, load_dataset
from imgcls_cli.data.loader import DeviceLoader, make_loader
from imgcls_cli.engine import distributed, ema, precise_bn
from imgcls_cli.engine.build import (auto_batch_size, bn_calibration_loader, build_loss, build_model,
                                     check_distributed, class_weights, domain_adversary, drop_remainder,
                                     log_class_counts, model_input, model_normalization, sampler_weights, sum_of,
                                     write_augment_preview)
from imgcls_cli.engine.device import auto_precision_for_model, autocast, resolve_device, resolve_precision
from imgcls_cli.engine.device import use_channels_last
from imgcls_cli.engine.distill import distillation_terms, load_teacher
from imgcls_cli.engine.domain import DomainAdversary
from imgcls_cli.engine.finetune import EncoderFreezer, l2sp_penalty, load_init, log_init, lr_multipliers
from imgcls_cli.engine.fit import StepOptions
from imgcls_cli.engine.reports import write_skipped_files
from imgcls_cli.engine.resume import load_resume_state, read_metrics, warn_changed_settings
from imgcls_cli.engine.run import Run
from imgcls_cli.engine.state import EarlyStopping, TrainState, seed_everything
from imgcls_cli.optim import build_optimizer, penalty
from imgcls_cli.plots import plot_lr
from imgcls_cli.rundir import git_commit, versions, write_csv
from imgcls_cli.schedule import build_schedule, lr_scheduler
from imgcls_cli.specs.eval import check_batch_size
from imgcls_cli.specs.train import TrainSpec
from imgcls_cli.tasks import task_of

log = logging.getLogger("imgcls")


@dataclass
class Training:
    """What the epochs need: the state they advance and the parts they use."""

    spec: TrainSpec
    state: TrainState
    ctx: distributed.Dist
    device: torch.device
    amp: Callable[[], Any]
    bundle: DatasetBundle
    model_name: str
    train_loader: DeviceLoader
    eval_loaders: dict[str, DeviceLoader]
    calibration: DeviceLoader | None  # the sample batch-norm statistics are recomputed over
    mixer: Any  # MixUp/CutMix, or None
    loss_fn: nn.Module
    step_options: StepOptions
    adversary: DomainAdversary | None
    target_eval: DeviceLoader | None  # the domain target's test split, when it has the source's classes
    freezer: EncoderFreezer | None
    resumed: bool  # continued from last.pt

    @property
    def has_val(self) -> bool:
        return len(self.bundle.splits["val"]) > 0


def prepare(run: Run, spec: TrainSpec, init: dict[str, Any] | None) -> Training:
    """Build the run (resumed from its last.pt with resume=); init is init=PATH's checkpoint."""
    lr_factor = build_schedule(spec.schedule, spec.epochs)
    augment = build_augment(spec.augment)
    loader_args, precision, resumed = start(run, spec)
    device = loader_args["device"]
    bundle = load_data(run, spec, init)
    model, model_name, model_kwargs, precision = place_model(run, spec, bundle, init, loader_args, precision)
    batch_size = choose_batch_size(run, spec, bundle)
    train_loader, eval_loaders, calibration = loaders(run, spec, augment, bundle, model, batch_size, loader_args)
    mixer = augment.mixer(bundle.num_classes)
    if run.main:
        write_augment_preview(train_loader, mixer, bundle, run.run_dir / "plots" / "augment_preview.png")
    optimizer = build_optimizer(model, spec.optimizer, batch_size,
                                lr_multipliers(model, bundle.num_classes, spec.finetune), run.ctx.world_size)
    freezer = EncoderFreezer(model, bundle.num_classes) if spec.finetune.freeze == "encoder" else None
    steps_per_epoch = -(-len(train_loader) // spec.optimizer.accumulate_steps)
    adversary, target_eval = None, None
    if spec.domain is not None:
        adversary, target_eval = domain_adversary(spec, augment, bundle, model, batch_size, len(train_loader),
                                                  loader_args)
        optimizer.add_param_group({"params": list(adversary.classifier.parameters()), "weight_decay": 0.0})
    scheduler = lr_scheduler(optimizer, lr_factor, steps_per_epoch)
    if run.main:
        base_lr = optimizer.param_groups[0]["initial_lr"]
        plot_lr([base_lr * lr_factor(i / steps_per_epoch) for i in range(spec.epochs * steps_per_epoch)],
                steps_per_epoch, run.run_dir / "plots" / "lr.png")
    weights = class_weights(dataset_config(spec), bundle.splits["train"].labels, bundle.classes)
    loss_fn = build_loss(None if weights is None else weights.to(device), spec.label_smoothing, spec.task)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    amp = lambda: autocast(device, precision)  # noqa: E731
    step_options = steps(spec, model, bundle, adversary, amp, device)
    has_val = len(bundle.splits["val"]) > 0
    state = TrainState(model, optimizer, scheduler, scaler, EarlyStopping.from_spec(spec.early_stopping, has_val),
                       header={"model": {"name": model_name, "kwargs": model_kwargs}, "classes": bundle.classes,
                               "input": model_input(bundle), "config": run.cfg, **task_header(spec, bundle)},
                       checkpoints=run.run_dir / "checkpoints", ctx=run.ctx, main=run.main)
    ema.attach(state, spec.ema)
    state.register("domain", adversary)
    if resumed is not None:
        resume(run, state, resumed, has_val)
    return Training(spec, state, run.ctx, device, amp, bundle, model_name, train_loader, eval_loaders, calibration,
                    mixer, loss_fn, step_options, adversary, target_eval, freezer, resumed is not None)


def task_header(spec: TrainSpec, bundle: DatasetBundle) -> dict[str, Any]:
    """What a multilabel checkpoint adds to its header: the task and each label's threshold (threshold= as given, or
    0.5 until the end of training tunes them on the validation split); nothing for multiclass, whose checkpoints
    stay as they were."""
    if not spec.task.multilabel:
        return {}
    from imgcls_cli.multilabel.metrics import check_thresholds

    given = 0.5 if spec.task.threshold is None else spec.task.threshold
    return {"task": "multilabel", "thresholds": [float(v) for v in check_thresholds(given, bundle.num_classes)]}


def dataset_config(spec: TrainSpec) -> dict[str, Any]:
    """The dataset's plain config: what a resume changed of it (image_size and channels=auto as the run chose them)
    included, which spec.dataset, parsed before, does not know."""
    return spec.config["dataset"]


def start(run: Run, spec: TrainSpec) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """The device and data-parallel job, last.pt of a run to continue, summary.json (running), the seeds.
    Returns the loaders' device, workers and memory format, the precision and last.pt's content (or None)."""
    ctx, device = distributed.start(spec.distributed, resolve_device(spec.device))
    run.ctx = ctx
    if ctx.enabled:  # every rank reads (resume) and rank 0 writes the run directory rank 0's Hydra made
        run.run_dir = Path(ctx.broadcast(str(run.run_dir)))
        check_distributed(ctx, spec)
    resumed = load_resume_state(run.cfg, run.run_dir, ctx.world_size, run.explicit_keys)
    precision = resolve_precision(spec.precision, device)
    channels_last = use_channels_last(spec.channels_last, device)
    num_workers = resolve_workers(spec.num_workers)
    run.summary.update(device=str(device), precision=precision, channels_last=channels_last,
                       versions=versions(), git_commit=git_commit())
    if ctx.enabled:
        run.summary["distributed"] = {"world_size": ctx.world_size, "backend": ctx.backend}
    run.write_summary()  # status "running" until the run ends, however it ends
    seed_everything(spec.seed)
    return {"device": device, "num_workers": num_workers, "channels_last": channels_last}, precision, resumed


def load_data(run: Run, spec: TrainSpec, init: dict[str, Any] | None) -> DatasetBundle:
    """The dataset with the normalization the model asks for; splits.csv and skipped files written."""
    bundle = load_dataset(dataset_config(spec), spec.seed, task=spec.task.name)
    model_normalization(spec.model, dataset_config(spec), bundle, init)
    log_class_counts(bundle)
    if run.main:
        write_skipped_files(run.run_dir, bundle.skipped, log)
    if bundle.split_table and run.main:
        write_csv(run.run_dir / "splits.csv", ({bundle.id_column: i, "split": s} for i, s in bundle.split_table),
                  [bundle.id_column, "split"])
    return bundle


def place_model(run: Run, spec: TrainSpec, bundle: DatasetBundle, init: dict[str, Any] | None,
                loader_args: dict[str, Any], precision: str) -> tuple[nn.Module, str, dict[str, Any], str]:
    """The model with init= weights, on the device (data-parallel ready); the precision it trains in."""
    model, model_name, model_kwargs = build_model(spec.model, bundle)
    if init is not None:
        report = load_init(model, model_name, init, str(spec.init), bundle.classes, bundle.channels)
        log_init(report, model, bundle.classes)
        run.summary["init"] = report.as_dict()
    device, channels_last = loader_args["device"], loader_args["channels_last"]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = distributed.prepare(model.to(device=device, memory_format=memory_format), run.ctx,
                                spec.distributed.sync_bn)
    chosen = auto_precision_for_model(precision, spec.precision, device, model)
    if chosen != precision:
        log.info(f"precision=auto: {chosen}, not {precision}: this model's depthwise convolutions are faster in "
                 f"fp32 on this CPU (AVX512-BF16 without AMX)")
        precision = run.summary["precision"] = chosen
    n_params = sum(p.numel() for p in model.parameters())
    log.info(f"model {model_name}: {n_params / 1e6:.2f}M parameters; device {device}, precision {precision}"
             f"{', channels_last' if channels_last else ''}")
    return model, model_name, model_kwargs, precision


def choose_batch_size(run: Run, spec: TrainSpec, bundle: DatasetBundle) -> int:
    """batch_size, or what auto chooses for this training split (what a resumed run's auto chose)."""
    ctx, cfg = run.ctx, run.cfg
    batch_size = spec.batch_size
    if batch_size is None and cfg.get("batch_size") != "auto":  # a resumed run: the batch size auto chose then
        batch_size = check_batch_size(cfg.get("batch_size"))
    n_train = len(bundle.splits["train"].labels)
    if batch_size is None:
        batch_size = auto_batch_size(n_train, ctx.world_size)
        log.info(f"batch_size auto: {batch_size} ({n_train} training images"
                 f"{f' over {ctx.world_size} processes' if ctx.enabled else ''}; set batch_size to choose)")
    run.summary["batch_size"] = cfg["batch_size"] = batch_size  # checkpoints record the batch size auto chose
    if ctx.enabled:
        run.summary["distributed"]["batch_size_per_process"] = batch_size
        log.info(f"data-parallel training: {ctx.world_size} processes ({ctx.backend}), {batch_size} images per "
                 f"process a step, {batch_size * ctx.world_size} in all")
    return batch_size


def loaders(run: Run, spec: TrainSpec, augment: BatchAugment, bundle: DatasetBundle, model: nn.Module,
            batch_size: int, loader_args: dict[str, Any]
            ) -> tuple[DeviceLoader, dict[str, DeviceLoader], DeviceLoader | None]:
    """The training loader, the val and test loaders, and the batch-norm calibration sample."""
    shard = (run.ctx.rank, run.ctx.world_size)  # each rank its part of every epoch (val too); rank 0 tests alone
    train = bundle.splits["train"]
    train_loader = make_loader(train.images, train.labels, batch_size, bundle.mean, bundle.std, shuffle=True,
                               drop_last=drop_remainder(len(train.labels), batch_size, run.ctx.world_size),
                               augment=augment, seed=spec.seed,
                               sample_weights=sampler_weights(dataset_config(spec), train.labels, bundle.num_classes),
                               shard=shard, pad_shards=True, **loader_args)
    eval_loaders = {s: make_loader(bundle.splits[s].images, bundle.splits[s].labels, spec.eval_batch_size,
                                   bundle.mean, bundle.std, shard=shard if s == "val" else (0, 1), **loader_args)
                    for s in ("val", "test")}
    calibration = bn_calibration_loader(spec.bn_recalibrate, model, bundle, batch_size, spec.seed, shard,
                                        loader_args)
    if not train.in_memory:
        log.info(f"images stream from {type(train_loader.store).__name__} with {loader_args['num_workers']} "
                 "worker(s) (not in memory: dataset.in_memory, dataset.memory_budget_gb)")
    return train_loader, eval_loaders, calibration


def steps(spec: TrainSpec, model: nn.Module, bundle: DatasetBundle, adversary: DomainAdversary | None,
          amp: Callable[[], Any], device: torch.device) -> StepOptions:
    """How each optimizer step is taken: penalties, clipping, accumulation, on_nan, domain, distillation."""
    l2sp, distill = spec.finetune.l2sp, spec.distill
    penalties = [p for p in (penalty(model, spec.optimizer),
                             l2sp_penalty(model, bundle.num_classes, l2sp) if l2sp else None) if p]
    options = StepOptions(penalty=sum_of(penalties), grad_clip_norm=spec.optimizer.grad_clip_norm,
                          accumulate_steps=spec.optimizer.accumulate_steps, on_nan=spec.on_nan, domain=adversary,
                          task=task_of(spec.task.name))
    if distill.teacher:
        teacher = load_teacher(distill.teacher, bundle.classes, model_input(bundle), device, spec.task.name)
        log.info(f"distilling from {distill.teacher}: T {distill.temperature}, alpha {distill.alpha}")
        options.teacher = lambda x: teacher(x, amp)
        options.distill = lambda s, t, hard: distillation_terms(s, t, hard, distill.temperature, distill.alpha,
                                                                spec.task.name)
    return options


def resume(run: Run, state: TrainState, resumed: dict[str, Any], has_val: bool) -> None:
    """Continue from last.pt: the state, metrics.csv's rows up to its epoch, the summary so far."""
    warn_changed_settings(resumed["config"], run.cfg)
    state.load_state_dict(resumed)
    state.rows = [r for r in read_metrics(run.run_dir / "metrics.csv") if r["epoch"] <= resumed["epoch"]]
    run.summary.update(best_epoch=state.best_epoch or None,
                       best_val_accuracy=state.best_score if has_val and state.best_epoch else None,
                       epochs_completed=resumed["epoch"])
    where = f"epoch {state.epoch + 1}, batch {state.position['batch']}" if state.position else \
        f"epoch {state.epoch + 1}"
    log.info(f"resuming {run.run_dir} at {where} (step {state.step})")

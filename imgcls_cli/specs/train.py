"""TrainSpec: `imgcls train`'s whole config checked once at the command edge, before the (possibly slow) data
loading, so that a typo fails at once; the engine reads its fields, never the config dict."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from imgcls_cli.cores import resolve_workers
from imgcls_cli.errors import UserError, as_float, as_int
from imgcls_cli.specs.augment import AugmentSpec
from imgcls_cli.specs.dataset import DatasetSpec
from imgcls_cli.specs.device import check_channels_last, check_precision
from imgcls_cli.specs.eval import check_batch_size, check_topk, check_tta
from imgcls_cli.specs.loop import BNRecalibrateSpec, DistributedSpec, EarlyStoppingSpec, EmaSpec
from imgcls_cli.specs.model import ModelSpec
from imgcls_cli.specs.optimizer import OptimizerSpec
from imgcls_cli.specs.schedule import ScheduleSpec
from imgcls_cli.specs.task import TaskSpec
from imgcls_cli.specs.tracking import TrackingSpec
from imgcls_cli.specs.transfer import DistillSpec, DomainSpec, FinetuneSpec

# numpy's range; the generators' seeds derived from it (seed x 1,000,003 x 1,009 + offsets) then fit in 64 bits
MAX_SEED = 2**32 - 1
ON_NAN = ("stop", "skip_batch")


def _switch(cfg: Mapping[str, Any], key: str) -> bool:
    """A yes/no key that null also turns off (compile, tensorboard)."""
    setting = cfg.get(key, False)
    if setting in (None, False):
        return False
    if setting is not True:
        raise UserError(f"{key} must be true or false, not '{setting}'.")
    return True


@dataclass(frozen=True)
class TrainSpec:
    """Every setting of a training run, checked; config is the whole resolved config (what checkpoints and
    config.yaml record)."""

    epochs: int
    batch_size: int | None  # None: auto, chosen once the training split's size is known
    eval_batch_size: int
    seed: int
    schedule: ScheduleSpec
    optimizer: OptimizerSpec  # with the loop's keys: grad_clip_norm, accumulate_steps, l1, l2
    distill: DistillSpec
    finetune: FinetuneSpec
    domain: DomainSpec | None  # None: no domain adaptation
    init: str | None  # an imgcls checkpoint to start from
    label_smoothing: float
    topk: int
    tta: str
    bn_recalibrate: BNRecalibrateSpec
    on_nan: str  # stop | skip_batch
    distributed: DistributedSpec
    device: str  # auto | cpu | cuda | cuda:N | mps: resolved (and checked against the machine) by the engine
    precision: str  # auto | fp32 | bf16 | fp16
    channels_last: str | bool  # auto | True | False
    num_workers: str | int  # auto | N
    compile: bool
    tensorboard: bool
    tracking: TrackingSpec  # where the run is also recorded (MLflow, TensorBoard)
    val_every: int
    every_n_steps: int  # checkpoint.every_n_steps: last.pt every this many optimizer steps too (0: per epoch)
    early_stopping: EarlyStoppingSpec
    ema: EmaSpec
    resume: str | None
    dataset: DatasetSpec
    model: ModelSpec
    augment: AugmentSpec
    task: TaskSpec  # multiclass | multilabel, its loss and thresholds
    config: dict[str, Any] = field(repr=False)
    explicit_keys: frozenset[str] = frozenset()  # the keys set on the command line

    @classmethod
    def parse(cls, cfg: dict[str, Any], explicit_keys: list[str] | set[str] | frozenset[str] = (),
              dataset_configs: Mapping[str, dict[str, Any]] | None = None) -> TrainSpec:
        """Check every setting, in the order a user's first mistake is reported. dataset_configs: each dataset
        option's config (train.yaml's dataset keys under the option's own), which domain.target chooses from."""
        epochs = as_int(cfg.get("epochs"), "epochs", minimum=1)
        batch_size = None if cfg.get("batch_size") == "auto" else check_batch_size(cfg.get("batch_size"))
        eval_batch_size = as_int(cfg.get("eval_batch_size"), "eval_batch_size", minimum=1)
        seed = as_int(cfg["seed"], "seed", minimum=0, maximum=MAX_SEED)
        schedule = ScheduleSpec.parse(cfg["schedule"])
        augment = AugmentSpec.from_config(cfg["augment"])
        optimizer = OptimizerSpec.parse(cfg["optimizer"])
        distill = DistillSpec.parse(cfg.get("distill"))
        finetune = FinetuneSpec.parse(cfg.get("finetune"))
        domain = _domain(cfg.get("domain"), dataset_configs or {})
        if finetune.needs_pretrained and not cfg.get("init") and not cfg["model"].get("weights") \
                and not cfg["model"].get("pretrained"):
            raise UserError("finetune.freeze=encoder and finetune.l2sp need pretrained weights to start from: "
                            "init=PATH (an imgcls checkpoint), model=tv model.weights=DEFAULT or model=timm "
                            "model.pretrained=true.")
        smoothing = as_float(cfg.get("label_smoothing", 0.0), "label_smoothing")
        if not 0.0 <= smoothing < 1.0:
            raise UserError(f"label_smoothing must be in [0, 1), not {smoothing}.")
        topk, tta = check_topk(cfg.get("topk", 5)), check_tta(cfg.get("tta", "none"))
        bn_recalibrate = BNRecalibrateSpec.parse(cfg)
        on_nan = cfg.get("on_nan", "stop")
        if on_nan not in ON_NAN:
            raise UserError(f"on_nan must be stop or skip_batch, not '{on_nan}'.")
        distributed = DistributedSpec.parse(cfg.get("distributed"))
        precision = check_precision(cfg["precision"])
        channels_last = check_channels_last(cfg.get("channels_last", "auto"))
        num_workers = cfg.get("num_workers", "auto")
        resolve_workers(num_workers)  # checks N
        compile_, tensorboard = _switch(cfg, "compile"), _switch(cfg, "tensorboard")
        tracking = TrackingSpec.parse(cfg.get("tracking"), tensorboard)
        val_every = as_int(cfg.get("val_every", 1), "val_every", minimum=1)
        every_n_steps = as_int((cfg.get("checkpoint") or {}).get("every_n_steps") or 0, "checkpoint.every_n_steps",
                               minimum=0)
        early_stopping, ema = EarlyStoppingSpec.parse(cfg.get("early_stopping")), EmaSpec.parse(cfg.get("ema"))
        task = TaskSpec.parse(cfg)
        early_stopping = _task_checks(task, cfg, early_stopping, domain, distributed, set(explicit_keys))
        dataset = DatasetSpec.from_config(cfg["dataset"])  # last, as the data loading checked it after the rest
        model = ModelSpec.from_config(cfg["model"])  # then the model's keyword arguments, as building checks them
        return cls(
            epochs=epochs, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, schedule=schedule,
            optimizer=optimizer, distill=distill, finetune=finetune, domain=domain, init=cfg.get("init") or None,
            label_smoothing=smoothing, topk=topk, tta=tta, bn_recalibrate=bn_recalibrate, on_nan=on_nan,
            distributed=distributed, device=str(cfg["device"]), precision=precision, channels_last=channels_last,
            num_workers=num_workers, compile=compile_, tensorboard=tensorboard, tracking=tracking,
            val_every=val_every,
            every_n_steps=every_n_steps, early_stopping=early_stopping, ema=ema,
            resume=str(cfg["resume"]) if cfg.get("resume") else None, dataset=dataset, model=model,
            augment=augment, task=task, config=cfg, explicit_keys=frozenset(explicit_keys))

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """The model builder's keyword arguments from the config (every model key but its name)."""
        return dict(self.model.kwargs)


def _domain(cfg: dict[str, Any] | None, dataset_configs: Mapping[str, dict[str, Any]]) -> DomainSpec | None:
    """domain.*, with the target option's dataset config when the command gave the options' configs."""
    spec = DomainSpec.parse(cfg, sorted(dataset_configs))
    return None if spec is None else spec.with_target(dataset_configs[spec.target])


def _task_checks(task: TaskSpec, cfg: dict[str, Any], stopping: EarlyStoppingSpec, domain: DomainSpec | None,
                 distributed: DistributedSpec, explicit: set[str]) -> EarlyStoppingSpec:
    """What task=multilabel does not take, one line each; its best.pt is chosen by val_map unless
    early_stopping.metric was set. val_map is a multilabel score."""
    if not task.multilabel:
        if stopping.metric == "val_map":
            raise UserError("early_stopping.metric=val_map is the mean average precision of task=multilabel; a "
                            "multiclass run chooses by val_accuracy or val_loss.")
        return stopping
    if (cfg.get("dataset") or {}).get("sampler") is not None:
        raise UserError("dataset.sampler=balanced draws images by their one class; it does not apply to "
                        "task=multilabel (use dataset.class_weights=auto, a pos_weight per label, or loss=asl).")
    if domain is not None:
        raise UserError("domain.target (domain-adversarial training) applies to task=multiclass.")
    if distributed.nproc > 1:
        raise UserError("task=multilabel trains in one process (distributed.nproc=1): its validation mAP needs "
                        "every image's scores in one place.")
    if "early_stopping.metric" not in explicit and stopping.metric == "val_accuracy":
        return EarlyStoppingSpec("val_map", "max", stopping.patience)
    return stopping

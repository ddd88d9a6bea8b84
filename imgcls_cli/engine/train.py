"""A whole training run: build from a plain config dict, fit, checkpoint, evaluate the best on test, report."""
from __future__ import annotations

import logging
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgcls_cli import console as out
from imgcls_cli.checkpoint import load_checkpoint, save_checkpoint
from imgcls_cli.data.augment import build_augment
from imgcls_cli.data.datasets import DatasetBundle, load_dataset
from imgcls_cli.data.loader import DeviceLoader, StreamLoader, make_loader, read_ids, resolve_workers
from imgcls_cli.engine import distributed, precise_bn
from imgcls_cli.engine.distill import COLUMNS as DISTILL_COLUMNS
from imgcls_cli.engine.distill import distill_options, distillation_terms, load_teacher
from imgcls_cli.engine.domain import COLUMNS as DOMAIN_COLUMNS
from imgcls_cli.engine.domain import DomainAdversary, cycle, domain_options, target_dataset_config
from imgcls_cli.engine.ema import build_ema
from imgcls_cli.engine.finetune import (EncoderFreezer, finetune_options, l2sp_penalty, load_init, log_init,
                                        lr_multipliers)
from imgcls_cli.engine.device import (auto_precision_for_model, autocast, resolve_device, resolve_precision,
                                      use_channels_last)
from imgcls_cli.engine.fit import EpochResult, NonFiniteLoss, Running, StepOptions, predict_logits, train_one_epoch
from imgcls_cli.engine.inference import check_batch_size, check_tta, predict_probs
from imgcls_cli.engine.reports import write_eval_reports, write_skipped_files
from imgcls_cli.errors import DivergedError, UserError, as_float, as_int
from imgcls_cli.models import create_model
from imgcls_cli.models import input_size as model_input_size
from imgcls_cli.models import normalization as model_norm
from imgcls_cli.optim import build_optimizer, optimizer_options, penalty, training_options
from imgcls_cli.plots import plot_augment_preview, plot_curves, plot_lr
from imgcls_cli.rundir import (METRIC_COLUMNS, command_line, git_commit, versions, write_csv, write_json,
                               write_text_atomic)
from imgcls_cli.schedule import build_schedule, lr_scheduler

log = logging.getLogger("imgcls")
MIX_STREAM = 500_009  # offsets the MixUp/CutMix generator's seed from the loader's
RANK_STREAM = 900_007  # offsets each data-parallel rank's MixUp/CutMix generator from rank 0's
STOP_CHECK = 10  # data-parallel ranks agree on a stop signal (SIGINT/SIGTERM) every this many optimizer steps
TARGET_STREAM = 700_001  # offsets the domain-adaptation target loader's seed from the source loader's
# numpy's range; the generators' seeds derived from it (seed x 1,000,003 x 1,009 + offsets) then fit in 64 bits
MAX_SEED = 2**32 - 1


def positive_int(cfg: dict[str, Any], key: str) -> int:
    return as_int(cfg.get(key), key, minimum=1)


AUTO_BATCH, AUTO_MIN_BATCH, AUTO_STEPS = 64, 16, 16


def batch_size_setting(cfg: dict[str, Any]) -> int | None:
    """batch_size: a whole number >= 1, or auto (None: chosen once the training split's size is known)."""
    return None if cfg.get("batch_size") == "auto" else check_batch_size(cfg.get("batch_size"))


def auto_batch_size(n_train: int, world_size: int = 1) -> int:
    """batch_size=auto: 64 images a step, fewer when the training split is small, so that an epoch takes about
    AUTO_STEPS optimizer steps (never fewer than 16 images a step). A quick run on a few hundred images otherwise
    takes a handful of steps an epoch, too few to learn from."""
    per_rank = -(-n_train // world_size)
    return max(AUTO_MIN_BATCH, min(AUTO_BATCH, per_rank // AUTO_STEPS))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors and plain containers (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back every global RNG state saved by rng_state()."""
    random.setstate(_as_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.getstate() is nested tuples; a checkpoint may give them back as lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


class ResumeRefused(UserError):
    """resume= names a run this one cannot continue: nothing of that run is changed."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: last.pt was written where the run stopped."""

    def __init__(self, signum: int, epoch: int, step: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} in epoch {epoch} at step {step}")
        self.signum = signum


# dataset keys that change where or how images are kept, not which images a run sees or how
CARRY_OVER_DATASET_KEYS = ("in_memory", "memory_budget_gb", "cache", "cache_dir", "download")


def _differences(prefix: str, saved: Any, now: Any) -> list[tuple[str, Any, Any]]:
    """(key, saved value, value now) of every leaf that differs between two config subtrees."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return [d for k in sorted(set(saved) | set(now), key=str)
                for d in _differences(f"{prefix}.{k}", saved.get(k), now.get(k))]
    return [] if saved == now else [(prefix, saved, now)]


def _short(value: Any, limit: int = 40) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def unresumable_changes(saved: dict[str, Any], cfg: dict[str, Any], explicit_keys: set[str]) -> list[str]:
    """The settings a resume changed whose state cannot carry over: the model (its weights), the dataset (its
    images, classes and splits), the optimizer's kind (its state), domain adaptation's classifier. A size or
    channel count the run chooses by itself (dataset.image_size=auto, a model's own resolution) is compared only
    when given on the command line."""
    def group(name: str) -> list[tuple[str, Any, Any]]:  # another option of the group: its name says it all
        was, now = saved.get(name) or {}, cfg.get(name) or {}
        if was.get("name") != now.get("name"):
            return [(f"{name}.name", was.get("name"), now.get("name"))]
        return _differences(name, was, now)

    found = group("model")
    chosen = {"image_size", "channels"}
    for key, was, now in group("dataset"):
        leaf = key.split(".", 2)[1]
        if leaf in CARRY_OVER_DATASET_KEYS or (leaf in chosen and key not in explicit_keys):
            continue
        found.append((key, was, now))
    was_opt, now_opt = saved.get("optimizer") or {}, cfg.get("optimizer") or {}
    if was_opt.get("name") != now_opt.get("name"):
        found.append(("optimizer.name", was_opt.get("name"), now_opt.get("name")))
    was_dom, now_dom = saved.get("domain") or {}, cfg.get("domain") or {}
    if was_dom.get("target") and now_dom.get("target"):
        found += [d for d in _differences("domain", was_dom, now_dom) if d[0] in ("domain.target", "domain.hidden")]
    return [f"{k} {_short(a)} -> {_short(b)}" for k, a, b in found]


def warn_changed_settings(saved: dict[str, Any], cfg: dict[str, Any]) -> None:
    """A resume with other epochs or another schedule continues, but says what that changes."""
    for key in ("epochs", "schedule", "optimizer", "batch_size"):
        if saved.get(key) != cfg.get(key):
            log.warning(f"resume: {key} was {saved.get(key)} and is now {cfg.get(key)}; the run continues with "
                        f"the new value, so the learning-rate curve (and the numbers) differ from an uninterrupted "
                        f"run")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.csv rows with numbers as numbers (empty cells as None), to append to on resume."""
    from imgcls_cli.rundir import read_csv

    if not path.is_file():
        return []
    rows = []
    for row in read_csv(path):
        parsed: dict[str, Any] = {k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
        parsed["epoch"] = int(parsed["epoch"])
        rows.append(parsed)
    return rows


def model_input(bundle: DatasetBundle) -> dict[str, Any]:
    return {"channels": bundle.channels, "size": bundle.image_size, "mean": bundle.mean, "std": bundle.std}


def build_model(cfg: dict[str, Any], bundle: DatasetBundle) -> tuple[nn.Module, str, dict[str, Any]]:
    """The configured model for this dataset: its channels, size and classes flow into the builder."""
    kwargs = {k: v for k, v in cfg["model"].items() if k != "name"}
    kwargs.update(num_classes=bundle.num_classes, in_channels=bundle.channels, image_size=bundle.image_size)
    name = cfg["model"]["name"]
    return create_model(name, **kwargs), name, kwargs


def log_class_counts(bundle: DatasetBundle) -> None:
    counts = torch.bincount(bundle.splits["train"].labels, minlength=bundle.num_classes).tolist()
    sizes = ", ".join(f"{s} {len(bundle.splits[s])}" for s in bundle.splits)
    log.info(f"dataset {bundle.name}: {bundle.num_classes} classes, {bundle.channels}x{bundle.image_size}x"
             f"{bundle.image_size}, {sizes}")
    log.info("train images per class: " + ", ".join(f"{c} {n}" for c, n in zip(bundle.classes, counts)))


def adapt_input_size(run: "Run", init: dict[str, Any] | None, write: bool = True) -> None:
    """Train at the size the init checkpoint was trained at, or at the model's own resolution when it has one,
    unless dataset.image_size was given."""
    cfg = run.cfg
    model_kwargs = {k: v for k, v in cfg["model"].items() if k != "name"}
    wanted = int(init["input"]["size"]) if init else model_input_size(cfg["model"]["name"], model_kwargs)
    have = cfg["dataset"].get("image_size")
    if wanted is None or wanted == have or "dataset.image_size" in run.explicit_keys:
        return
    asker = f"init={cfg['init']}" if init else f"model {cfg['model']['name']}"
    log.info(f"{asker} asks for {wanted}x{wanted} inputs: dataset.image_size {have} -> "
             f"{wanted} (set dataset.image_size to choose)")
    cfg["dataset"]["image_size"] = int(wanted)
    if not write:
        return
    from omegaconf import OmegaConf

    write_text_atomic(run.run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(cfg)))


def model_normalization(cfg: dict[str, Any], bundle: DatasetBundle, init: dict[str, Any] | None) -> None:
    """Pretrained weights bring their own mean/std (init=PATH's, unless dataset.mean/std are set, or torchvision's);
    a 1-channel dataset takes the mean over RGB."""
    model_kwargs = {k: v for k, v in cfg["model"].items() if k != "name"}
    if init is not None:
        given = cfg["dataset"].get("mean") is not None
        stats = None if given else (init["input"]["mean"], init["input"]["std"])
    else:
        stats = model_norm(cfg["model"]["name"], model_kwargs)
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
    if setting == "auto":
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


def build_loss(weights: torch.Tensor | None, smoothing: float) -> nn.Module:
    """Cross-entropy against y(1 - a) + a/K (label smoothing a), class indices or soft (MixUp/CutMix) targets,
    each sample weighted by its class weight."""
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


EMA_COLUMNS = ("ema_val_loss", "ema_val_accuracy")


def bn_calibration_loader(bn: precise_bn.Options, model: nn.Module, bundle: DatasetBundle, batch_size: int,
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


def validation(model: nn.Module, loader: DeviceLoader, amp: Any,
               ctx: distributed.Dist | None = None) -> tuple[float, float]:
    """(loss, accuracy) of the model on the loader's split (its shards summed over the ranks, with ctx)."""
    logits, targets = predict_logits(model, loader, amp)
    n = len(targets)
    loss = F.cross_entropy(logits.double(), targets, reduction="sum").item() if n else 0.0
    correct = (logits.argmax(1) == targets).sum().item() if n else 0
    if ctx is not None:
        loss, correct, n = ctx.sum([loss, correct, n])
    return loss / max(n, 1), correct / max(n, 1)


def epoch_totals(result: EpochResult, ctx: distributed.Dist) -> EpochResult:
    """An epoch's training loss and accuracy over every rank's images; the slowest rank's seconds."""
    if not ctx.enabled:
        return result
    loss, correct, images, skipped, distilled = ctx.sum([
        result.loss * result.images, result.accuracy * result.images, result.images, result.skipped,
        (result.distill_loss or 0.0) * result.images])
    return EpochResult(loss / max(images, 1), correct / max(images, 1), int(images), ctx.max([result.seconds])[0],
                       int(skipped), None if result.distill_loss is None else distilled / max(images, 1))


def check_distributed(ctx: distributed.Dist, cfg: dict[str, Any], tuning: Any, adaptation: Any) -> None:
    """What data-parallel training does not combine with, refused in one line."""
    if not ctx.enabled:
        return
    refused = {"domain.target": adaptation is not None, "on_nan=skip_batch": cfg.get("on_nan") == "skip_batch",
               "finetune.unfreeze_epoch": tuning.freeze == "encoder" and tuning.unfreeze_epoch is not None}
    for what, found in refused.items():
        if found:
            raise UserError(f"{what} is not supported in data-parallel training ({ctx.world_size} processes): "
                            "train it in one process.")


class EarlyStopping:
    """early_stopping.metric (val_accuracy | val_loss) in its mode (max | min) chooses best.pt; with patience > 0
    training stops after that many validations in a row without improvement."""

    METRICS = ("val_accuracy", "val_loss")

    def __init__(self, metric: str, mode: str, patience: int) -> None:
        self.metric, self.mode, self.patience, self.bad_epochs = metric, mode, patience, 0

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None, has_val: bool) -> EarlyStopping:
        cfg = cfg or {}
        metric = cfg.get("metric", "val_accuracy")
        if metric not in cls.METRICS:
            raise UserError(f"early_stopping.metric must be one of {', '.join(cls.METRICS)}, not '{metric}'.")
        mode = cfg.get("mode") or ("min" if metric == "val_loss" else "max")
        if mode not in ("max", "min"):
            raise UserError(f"early_stopping.mode must be max or min, not '{mode}'.")
        patience = as_int(cfg.get("patience", 0) or 0, "early_stopping.patience", minimum=0)
        if patience and not has_val:
            raise UserError("early_stopping.patience needs a validation split (dataset.val_fraction > 0).")
        # Without a validation split best.pt follows the training accuracy, which is better when higher.
        return cls(metric, mode if has_val else "max", patience)

    def score(self, row: dict[str, Any]) -> float | None:
        return row.get(self.metric)

    def better(self, score: float, best: float) -> bool:
        return score > best if self.mode == "max" else score < best

    def count(self, improved: bool) -> None:
        self.bad_epochs = 0 if improved else self.bad_epochs + 1

    def stop(self) -> bool:
        return bool(self.patience) and self.bad_epochs >= self.patience


def sum_of(penalties: list[Callable[[], torch.Tensor]]) -> Callable[[], torch.Tensor] | None:
    """One penalty term out of several (None when there are none)."""
    if len(penalties) <= 1:
        return penalties[0] if penalties else None
    return lambda: torch.stack([p() for p in penalties]).sum()


def compiled(model: nn.Module, setting: Any) -> nn.Module:
    """compile=true: torch.compile(model) for training and validation (the first steps pay the compilation)."""
    if setting in (None, False):
        return model
    if setting is not True:
        raise UserError(f"compile must be true or false, not '{setting}'.")
    log.info("compile=true: torch.compile compiles the model in the first steps")
    return torch.compile(model)


def tensorboard_writer(enabled: Any, run_dir: Path, first_epoch: int) -> Any:
    """tensorboard=true: event files in <run dir>/tensorboard beside metrics.csv (a resume drops later steps)."""
    if enabled in (None, False):
        return None
    if enabled is not True:
        raise UserError(f"tensorboard must be true or false, not '{enabled}'.")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("tensorboard=true needs the tensorboard package: pip install 'imgcls[tensorboard]' "
                        "(or pip install tensorboard).") from None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=first_epoch)


class Run:
    """The state of one training run and the files it writes into run_dir."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.started = time.perf_counter()
        self.rows: list[dict[str, Any]] = []
        self.explicit_keys: set[str] = set()
        self.resume_state: dict[str, Any] | None = None  # last.pt of the run being continued
        self.stop_signal = 0  # SIGINT or SIGTERM once one arrived
        self.ctx = distributed.Dist()  # the data-parallel job this run is part of (a single process by default)
        self.main = not distributed.quiet_rank()  # rank 0 alone writes the run directory
        self.summary: dict[str, Any] = {"status": "running", "best_epoch": None, "best_val_accuracy": None,
                                        "test_accuracy": None, "seed": cfg.get("seed"), "command": command_line()}

    def write_summary(self, status: str | None = None, **extra: Any) -> dict[str, Any]:
        if status:
            self.summary["status"] = status
        self.summary.update(extra)
        self.summary["wall_seconds"] = round(time.perf_counter() - self.started, 3)
        if not self.main:
            return self.summary
        try:
            write_json(self.run_dir / "summary.json", self.summary)
        except UserError as exc:
            if status in (None, "running", "completed"):
                raise
            log.warning(str(exc))  # the run is ending anyway: its own error is the one to report
        return self.summary


def run_training(cfg: dict[str, Any], run_dir: str | Path, explicit_keys: list[str] | None = None) -> dict[str, Any]:
    """Train as cfg says, writing the run directory; returns summary.json's content.

    explicit_keys are the keys the user set on the command line: a model's own input size (EfficientNet's
    scaled resolution, pretrained weights' crop) replaces dataset.image_size unless the user set it.
    """
    run = Run(cfg, Path(run_dir))
    run.explicit_keys = set(explicit_keys or [])
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, frame: Any) -> None:
        if run.stop_signal:  # a second one: stop now
            raise KeyboardInterrupt
        run.stop_signal = signum
        log.warning(f"{signal.Signals(signum).name}: finishing this step, then writing last.pt "
                    "(again to stop at once)")

    if threading.current_thread() is threading.main_thread():
        for sig in previous:
            signal.signal(sig, on_signal)
    try:
        _fit(run)
    except Interrupted as exc:
        run.write_summary("interrupted", error=str(exc))
        if run.main:
            print(f"interrupted: {exc}; last.pt is saved. Continue with: imgcls train resume={run.run_dir}",
                  file=sys.stderr)
        raise SystemExit(128 + exc.signum) from None
    except KeyboardInterrupt:
        run.write_summary("interrupted")
        raise
    except DivergedError as exc:
        run.write_summary("diverged", error=str(exc))
        raise
    except ResumeRefused:  # the run to continue is left as it was
        raise
    except BaseException as exc:
        run.write_summary("failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        run.ctx.close()
    return run.summary


def _put_back_config(run: Run, state: dict[str, Any]) -> None:
    """A refused resume leaves the run as it was: its config.yaml (which the command wrote with this run's
    settings) holds the settings it trained with again."""
    if not run.main or not isinstance(state.get("config"), dict) or not (run.run_dir / "config.yaml").is_file():
        return
    from omegaconf import OmegaConf

    write_text_atomic(run.run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(state["config"])))


def load_resume_state(run: Run) -> None:
    """resume=...: last.pt of the run being continued, which must have trained in as many processes."""
    last = run.run_dir / "checkpoints" / "last.pt"
    if not (run.cfg.get("resume") and last.is_file()):
        return
    state = load_checkpoint(last)
    if "best" not in state:
        raise ResumeRefused(f"{last} holds no training state to resume from (written by another version?).")
    saved = int((state.get("distributed") or {}).get("world_size", 1))
    if saved != run.ctx.world_size:
        _put_back_config(run, state)
        raise ResumeRefused(f"resume: {run.run_dir} trained in {saved} process(es) and continues only in {saved} "
                        f"(distributed.nproc={saved}, or torchrun --nproc_per_node), not {run.ctx.world_size}: "
                        "the data order and the images per step depend on it.")
    changed = unresumable_changes(state.get("config") or {}, run.cfg, run.explicit_keys)
    if changed:
        _put_back_config(run, state)
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise ResumeRefused(f"resume: {run.run_dir} trained with other settings, whose state cannot carry over: "
                            f"{shown}; resume with the settings it was trained with, or start a new run (no "
                            "resume=).")
    run.resume_state = state
    # What auto chose when the run started is kept: the files of a folder may have changed since.
    dataset = run.cfg["dataset"]
    for key, field in (("image_size", "size"), ("channels", "channels")):
        if dataset.get(key) == "auto":
            dataset[key] = int(state["input"][field])
    if run.cfg.get("batch_size") == "auto" and isinstance((state.get("config") or {}).get("batch_size"), int):
        run.cfg["batch_size"] = state["config"]["batch_size"]


def _fit(run: Run) -> None:
    cfg, run_dir = run.cfg, run.run_dir
    epochs, batch_size = positive_int(cfg, "epochs"), batch_size_setting(cfg)
    eval_batch_size = positive_int(cfg, "eval_batch_size")
    seed = as_int(cfg["seed"], "seed", minimum=0, maximum=MAX_SEED)
    # Check every setting before the (possibly slow) data loading, so a typo fails at once.
    lr_factor = build_schedule(cfg["schedule"], epochs)
    augment = build_augment(cfg["augment"])
    optimizer_options(cfg["optimizer"])
    teacher_path, temperature, alpha = distill_options(cfg.get("distill"))
    tuning = finetune_options(cfg.get("finetune"))
    adaptation = domain_options(cfg.get("domain"))
    init = load_checkpoint(cfg["init"]) if cfg.get("init") else None
    if tuning.needs_pretrained and init is None and not cfg["model"].get("weights"):
        raise UserError("finetune.freeze=encoder and finetune.l2sp need pretrained weights to start from: "
                        "init=PATH (an imgcls checkpoint) or model=tv model.weights=DEFAULT.")
    smoothing = as_float(cfg.get("label_smoothing", 0.0), "label_smoothing")
    if not 0.0 <= smoothing < 1.0:
        raise UserError(f"label_smoothing must be in [0, 1), not {smoothing}.")
    topk = as_int(cfg.get("topk", 5), "topk", minimum=1)
    tta = check_tta(cfg.get("tta", "none"))
    bn_options = precise_bn.options(cfg)
    on_nan = cfg.get("on_nan", "stop")
    if on_nan not in ("stop", "skip_batch"):
        raise UserError(f"on_nan must be stop or skip_batch, not '{on_nan}'.")
    dist_options = distributed.options(cfg.get("distributed"))
    device = resolve_device(cfg["device"])
    ctx, device = distributed.start(dist_options, device)
    run.ctx = ctx
    if ctx.enabled:  # every rank reads (resume) and rank 0 writes the run directory rank 0's Hydra made
        run.run_dir = run_dir = Path(ctx.broadcast(str(run_dir)))
        check_distributed(ctx, cfg, tuning, adaptation)
    load_resume_state(run)
    if batch_size is None and run.resume_state is not None:  # the batch size auto chose when the run started
        batch_size = batch_size_setting(cfg)
    precision = resolve_precision(cfg["precision"], device)
    channels_last = use_channels_last(cfg.get("channels_last", "auto"), device)
    num_workers = resolve_workers(cfg.get("num_workers", "auto"))
    run.summary.update(device=str(device), precision=precision, channels_last=channels_last,
                       versions=versions(), git_commit=git_commit())
    if ctx.enabled:
        run.summary["distributed"] = {"world_size": ctx.world_size, "backend": ctx.backend}
    run.write_summary()  # status "running" until the run ends, however it ends
    seed_everything(seed)

    adapt_input_size(run, init, write=run.main)
    bundle = load_dataset(cfg["dataset"], seed)
    model_normalization(cfg, bundle, init)
    log_class_counts(bundle)
    if run.main:
        write_skipped_files(run_dir, bundle.skipped, log)
    if bundle.split_table and run.main:
        write_csv(run_dir / "splits.csv", ({bundle.id_column: i, "split": s} for i, s in bundle.split_table),
                  [bundle.id_column, "split"])
    model, model_name, model_kwargs = build_model(cfg, bundle)
    if init is not None:
        report = load_init(model, model_name, init, str(cfg["init"]), bundle.classes, bundle.channels)
        log_init(report, model, bundle.classes)
        run.summary["init"] = report.as_dict()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = distributed.prepare(model.to(device=device, memory_format=memory_format), ctx, dist_options.sync_bn)
    chosen = auto_precision_for_model(precision, cfg["precision"], device, model)
    if chosen != precision:
        log.info(f"precision=auto: {chosen}, not {precision}: this model's depthwise convolutions are faster in "
                 f"fp32 on this CPU (AVX512-BF16 without AMX)")
        precision = run.summary["precision"] = chosen
    n_params = sum(p.numel() for p in model.parameters())
    log.info(f"model {model_name}: {n_params / 1e6:.2f}M parameters; device {device}, precision {precision}"
             f"{', channels_last' if channels_last else ''}")

    train_labels = bundle.splits["train"].labels
    if batch_size is None:
        batch_size = auto_batch_size(len(train_labels), ctx.world_size)
        log.info(f"batch_size auto: {batch_size} ({len(train_labels)} training images"
                 f"{f' over {ctx.world_size} processes' if ctx.enabled else ''}; set batch_size to choose)")
    run.summary["batch_size"] = cfg["batch_size"] = batch_size  # checkpoints record the batch size auto chose
    if ctx.enabled:
        run.summary["distributed"]["batch_size_per_process"] = batch_size
        log.info(f"data-parallel training: {ctx.world_size} processes ({ctx.backend}), {batch_size} images per "
                 f"process a step, {batch_size * ctx.world_size} in all")
    loader_args = {"device": device, "num_workers": num_workers, "channels_last": channels_last}
    shard = (ctx.rank, ctx.world_size)  # each rank its part of every epoch (validation too); rank 0 tests alone
    train_loader = make_loader(bundle.splits["train"].images, train_labels, batch_size, bundle.mean, bundle.std,
                               shuffle=True, drop_last=drop_remainder(len(train_labels), batch_size, ctx.world_size),
                               augment=augment, seed=seed,
                               sample_weights=sampler_weights(cfg["dataset"], train_labels, bundle.num_classes),
                               shard=shard, pad_shards=True, **loader_args)
    eval_loaders = {s: make_loader(bundle.splits[s].images, bundle.splits[s].labels, eval_batch_size, bundle.mean,
                                   bundle.std, shard=shard if s == "val" else (0, 1), **loader_args)
                    for s in ("val", "test")}
    calibration = bn_calibration_loader(bn_options, model, bundle, batch_size, seed, shard, loader_args)
    bn_names = set(precise_bn.state_names(model))
    if not bundle.splits["train"].in_memory:
        log.info(f"images stream from {type(train_loader.store).__name__} with {num_workers} worker(s) "
                 "(not in memory: dataset.in_memory, dataset.memory_budget_gb)")
    mixer = augment.mixer(bundle.num_classes)
    if run.main:
        write_augment_preview(train_loader, mixer, bundle, run_dir / "plots" / "augment_preview.png")
    optimizer = build_optimizer(model, cfg["optimizer"], batch_size, lr_multipliers(model, bundle.num_classes, tuning),
                                ctx.world_size)
    freezer = EncoderFreezer(model, bundle.num_classes) if tuning.freeze == "encoder" else None
    options = training_options(cfg["optimizer"])
    steps_per_epoch = -(-len(train_loader) // options.accumulate_steps)
    adversary, target_eval = None, None
    if adaptation is not None:
        adversary, target_eval = domain_adversary(adaptation, cfg, bundle, model, augment, seed, epochs, batch_size,
                                                  len(train_loader), loader_args)
        optimizer.add_param_group({"params": list(adversary.classifier.parameters()), "weight_decay": 0.0})
    scheduler = lr_scheduler(optimizer, lr_factor, steps_per_epoch)
    base_lr = optimizer.param_groups[0]["initial_lr"]
    if run.main:
        plot_lr([base_lr * lr_factor(i / steps_per_epoch) for i in range(epochs * steps_per_epoch)], steps_per_epoch,
                run_dir / "plots" / "lr.png")
    weights = class_weights(cfg["dataset"], train_labels, bundle.classes)
    loss_fn = build_loss(None if weights is None else weights.to(device), smoothing)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    amp = lambda: autocast(device, precision)  # noqa: E731

    base = {"model": {"name": model_name, "kwargs": model_kwargs}, "classes": bundle.classes,
            "input": model_input(bundle), "config": cfg}
    has_val = len(bundle.splits["val"]) > 0
    penalties = [p for p in (penalty(model, cfg["optimizer"]),
                             l2sp_penalty(model, bundle.num_classes, tuning.l2sp) if tuning.l2sp else None) if p]
    step_options = StepOptions(penalty=sum_of(penalties), grad_clip_norm=options.grad_clip_norm,
                               accumulate_steps=options.accumulate_steps, on_nan=on_nan, domain=adversary)
    if teacher_path:
        teacher = load_teacher(teacher_path, bundle.classes, model_input(bundle), device)
        log.info(f"distilling from {teacher_path}: T {temperature}, alpha {alpha}")
        step_options.teacher = lambda x: teacher(x, amp)
        step_options.distill = lambda s, t, hard: distillation_terms(s, t, hard, temperature, alpha)
    every_n_steps = as_int((cfg.get("checkpoint") or {}).get("every_n_steps") or 0, "checkpoint.every_n_steps",
                           minimum=0)
    best_acc, best_epoch, step, start_epoch, position = -1.0, 0, 0, 1, None
    stopper = EarlyStopping.from_config(cfg.get("early_stopping"), has_val)
    val_every = as_int(cfg.get("val_every", 1), "val_every", minimum=1)
    ema = build_ema(model, cfg.get("ema"))
    best_ema = -1.0
    resumed = run.resume_state
    if resumed is not None:
        warn_changed_settings(resumed["config"], cfg)
        model.load_state_dict(resumed["state_dict"])
        if resumed.get("bn_train_stats"):  # training goes on from the statistics it had, not the recomputed ones
            model.load_state_dict(resumed["bn_train_stats"], strict=False)
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        if scaler is not None and resumed.get("scaler"):
            scaler.load_state_dict(resumed["scaler"])
        best_acc, best_epoch = resumed["best"]["score"], resumed["best"]["epoch"]
        stopper.bad_epochs, best_ema = resumed["best"].get("bad_epochs", 0), resumed["best"].get("ema", -1.0)
        if ema is not None and resumed.get("ema"):
            ema.load_state_dict(resumed["ema"])
        if adversary is not None and resumed.get("domain"):
            adversary.load_state_dict(resumed["domain"])
        mine = resumed["ranks"][ctx.rank] if resumed.get("ranks") else resumed  # each rank's own data position
        step, start_epoch, position = resumed["step"], resumed["epoch"] + 1, mine.get("position")
        run.rows = [r for r in read_metrics(run_dir / "metrics.csv") if r["epoch"] <= resumed["epoch"]]
        run.summary.update(best_epoch=best_epoch or None, best_val_accuracy=best_acc if has_val and best_epoch
                           else None, epochs_completed=resumed["epoch"])
        where = f"epoch {start_epoch}, batch {position['batch']}" if position else f"epoch {start_epoch}"
        log.info(f"resuming {run_dir} at {where} (step {step})")
        restore_rng(mine["rng"])

    def cpu_state() -> dict[str, torch.Tensor]:
        # a copy of the batch-norm statistics: on the CPU .cpu() is the live tensor, and recomputed statistics are
        # replaced by the training-time ones after validation
        return {k: v.detach().cpu().clone() if k in bn_names else v.detach().cpu() for k, v in model.state_dict().items()}

    def save_last(epoch_done: int, at: dict[str, Any] | None, state: dict[str, torch.Tensor] | None = None,
                  train_stats: dict[str, torch.Tensor] | None = None) -> None:
        ranks = ctx.gather({"rng": rng_state(), "position": at}) if ctx.enabled else None  # every rank calls it
        if not run.main:
            return
        save_checkpoint({**base, "state_dict": state or cpu_state(), "epoch": epoch_done, "step": step,
                         "distributed": {"world_size": ctx.world_size}, "ranks": ranks,
                         "metrics": {k: v for k, v in run.rows[-1].items() if k != "epoch"} if run.rows else {},
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "scaler": scaler.state_dict() if scaler else None, "rng": rng_state(),
                         "best": {"score": best_acc, "epoch": best_epoch, "bad_epochs": stopper.bad_epochs,
                                  "ema": best_ema},
                         "ema": ema.state_dict() if ema is not None else None, "position": at,
                         "domain": adversary.state_dict() if adversary is not None else None,
                         # the batch-norm statistics training continues from, where state_dict holds recomputed ones
                         "bn_train_stats": train_stats},
                        run_dir / "checkpoints" / "last.pt")

    if freezer is not None and ctx.enabled and tuning.frozen_at(start_epoch):
        freezer.freeze()  # before DistributedDataParallel takes note of the parameters that get gradients
    # net trains and validates; `model` holds the weights it saves. Several processes: DistributedDataParallel
    # trains, and each rank validates its shard with the model itself (DDP's forward would want every rank).
    net = compiled(ctx.wrap(model, device), cfg.get("compile", False))
    eval_net = model if ctx.enabled else net
    if ctx.rank and resumed is None:  # each rank its own dropout masks (a resumed rank restored its own RNG)
        torch.manual_seed(seed * 1_000_003 + ctx.rank)
    board = tensorboard_writer(cfg.get("tensorboard", False), run_dir, start_epoch) if run.main else None
    for epoch in range(start_epoch, epochs + 1):
        epoch_start = time.perf_counter()
        if freezer is not None:
            if tuning.frozen_at(epoch):
                freezer.freeze()
            elif freezer.hooks:
                log.info(f"epoch {epoch}: the encoder trains from now on (finetune.unfreeze_epoch)")
                freezer.unfreeze()
        train_loader.set_epoch(epoch)
        mix_gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch + MIX_STREAM + ctx.rank * RANK_STREAM)
        running = None
        if position is not None:  # the rest of an epoch that a resumed run had begun
            train_loader.start_at(position["batch"], position["gen"])
            mix_gen.set_state(position["mix_gen"])
            running, epoch_lr, position = Running(**position["running"]), position["lr"], None
        mix = (lambda x, y: mixer(x, y, mix_gen)) if mixer is not None else None
        lr = optimizer.param_groups[0]["lr"] if running is None else epoch_lr

        def after_step(sums: Callable[[], Running]) -> None:
            nonlocal step
            step += 1
            if ema is not None:
                ema.update(model)
            stop = run.stop_signal
            if ctx.enabled:  # the ranks stop together: they agree every STOP_CHECK steps
                stop = int(ctx.max([stop])[0]) if step % STOP_CHECK == 0 else 0
            if stop or (every_n_steps and step % every_n_steps == 0):
                save_last(epoch - 1, {"epoch": epoch, **train_loader.position(), "mix_gen": mix_gen.get_state(),
                                      "running": vars(sums()), "lr": lr})
            if stop:
                raise Interrupted(stop, epoch, step)

        try:
            with out.EpochProgress(f"epoch {epoch}/{epochs}", train_loader.samples()) as bar:
                result = train_one_epoch(net, train_loader, optimizer, scheduler, loss_fn, amp, scaler,
                                         bar, mix=mix, running=running, after_step=after_step,
                                         options=step_options, first_step=step)
        except NonFiniteLoss as exc:
            raise DivergedError(f"training diverged: {exc} (epoch {epoch}); the last good checkpoint is kept; "
                                "lower optimizer.lr, or set on_nan=skip_batch to leave such batches out.") from None
        result = epoch_totals(result, ctx)
        if result.skipped:
            log.warning(f"epoch {epoch}: {result.skipped} batch(es) with a NaN or infinite loss left out "
                        "(on_nan=skip_batch)")
        validate = has_val and (epoch % val_every == 0 or epoch == epochs)
        recal = calibration is not None and bn_options.active(step)
        # Validation, best.pt and last.pt see statistics recomputed with this epoch's weights; training goes on
        # from its own running statistics (kept in last.pt too, for a resume to continue exactly).
        with precise_bn.recalibrated([model, *([ema.module] if ema is not None else [])], lambda: calibration, amp,
                                     ctx.sum if ctx.enabled else None, enabled=recal):
            val_loss = val_acc = ema_acc = None
            if validate:
                val_loss, val_acc = validation(eval_net, eval_loaders["val"], amp, ctx)
            row = {"epoch": epoch, "lr": lr, "train_loss": result.loss, "train_accuracy": result.accuracy,
                   "val_loss": val_loss, "val_accuracy": val_acc,
                   "epoch_seconds": round(time.perf_counter() - epoch_start, 3),
                   "images_per_second": round(result.images_per_second, 1)}
            if result.distill_loss is not None:
                row["distill_loss"] = result.distill_loss
            if adversary is not None:
                row.update(adversary.epoch_metrics())
                if target_eval is not None:
                    row["target_accuracy"] = validation(eval_net, target_eval, amp)[1]
            if ema is not None and validate:
                row["ema_val_loss"], ema_acc = validation(ema.module, eval_loaders["val"], amp, ctx)
                row["ema_val_accuracy"] = ema_acc
                ema_improved = ema_acc > best_ema  # the EMA weights' own best, a model checkpoint like best.pt
                best_ema = max(best_ema, ema_acc)
                if ema_improved and run.main:
                    save_checkpoint({**base, "state_dict": ema.state_dict()["state_dict"], "epoch": epoch,
                                     "step": step, "metrics": {"val_accuracy": ema_acc, "val_loss": row["ema_val_loss"]}},
                                    run_dir / "checkpoints" / "best_ema.pt")
            run.rows.append(row)
            if run.main:
                write_csv(run_dir / "metrics.csv", run.rows, [*METRIC_COLUMNS, *(EMA_COLUMNS if ema else ()),
                                                              *(DOMAIN_COLUMNS if adversary else ()),
                                                              *(DISTILL_COLUMNS if teacher_path else ())])
            if board is not None:
                for key, value in row.items():
                    if key != "epoch" and value is not None:
                        board.add_scalar(key, value, epoch)
                board.flush()
            score = stopper.score(row) if has_val else result.accuracy
            improved = score is not None and (best_epoch == 0 or stopper.better(score, best_acc))
            state = cpu_state() if run.main else None  # one copy for best.pt and last.pt
            if improved:
                best_acc, best_epoch = score, epoch
            if improved and run.main:
                save_checkpoint({**base, "state_dict": state, "epoch": epoch, "step": step,
                                 "metrics": {k: v for k, v in row.items() if k != "epoch"}},
                                run_dir / "checkpoints" / "best.pt")
            if validate:
                stopper.count(improved)
        train_stats = ({k: v.detach().cpu() for k, v in model.state_dict().items() if k in bn_names}
                       if recal and run.main else None)
        save_last(epoch, None, state, train_stats)
        val_text = f"  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}" if validate else ""
        val_text += f"  ema_val_acc {ema_acc:.4f}" if ema_acc is not None else ""
        val_text += f"  target_acc {row['target_accuracy']:.4f}" if row.get("target_accuracy") is not None else ""
        log.info(f"epoch {epoch}/{epochs}  lr {lr:.3g}  train_loss {result.loss:.4f}  train_acc "
                 f"{result.accuracy:.4f}{val_text}  {row['epoch_seconds']:.1f}s  "
                 f"{result.images_per_second:.0f} img/s{'  *' if improved else ''}")
        best_row = next((r for r in run.rows if r["epoch"] == best_epoch), {})
        run.summary.update(best_epoch=best_epoch, best_val_accuracy=best_row.get("val_accuracy"),
                           epochs_completed=epoch)
        if target_eval is not None:  # best.pt's accuracy on the target domain's test split
            run.summary["target_accuracy"] = best_row.get("target_accuracy")
        if run.stop_signal:  # arrived during validation: the epoch is saved whole
            raise Interrupted(run.stop_signal, epoch, step)
        if validate and stopper.stop():
            log.info(f"early stopping: {stopper.metric} did not improve for {stopper.bad_epochs} validation(s) "
                     f"(early_stopping.patience={stopper.patience}); best epoch {best_epoch}")
            run.summary["early_stopped"] = True
            break
    if board is not None:
        board.close()
    speeds = [r["images_per_second"] for r in run.rows[1:]] or [run.rows[-1]["images_per_second"]]
    run.summary["train_images_per_second"] = round(float(np.median(speeds)), 1)
    if not run.main:  # rank 0 tests best.pt and reports
        return
    plot_curves(run.rows, run_dir / "plots" / "curves.png")

    test_metrics = evaluate_best(model, run_dir, eval_loaders["test"], bundle, amp, topk, tta)
    run.summary["test_accuracy"] = test_metrics.get("accuracy")
    streamed = [ld for ld in (train_loader, *eval_loaders.values()) if isinstance(ld, StreamLoader)]
    if streamed:  # bad files found while streaming
        found = {**{p: why for ld in streamed for p, why in ld.skipped.items()}, **dict(bundle.skipped)}
        write_skipped_files(run_dir, sorted(found.items()), log)
    run.write_summary("completed")
    _results_table(run, model_name, bundle.name, test_metrics)


def domain_adversary(options: Any, cfg: dict[str, Any], bundle: DatasetBundle, model: nn.Module, augment: Any,
                     seed: int, epochs: int, batch_size: int, batches_per_epoch: int,
                     loader_args: dict[str, Any]) -> tuple[DomainAdversary, DeviceLoader | None]:
    """domain.target's data: its train split's images (never its labels) feed the domain classifier; its test
    split, when it has the source's classes, gives the target accuracy of each epoch."""
    target = load_dataset(target_dataset_config(options, cfg["dataset"], bundle.channels, bundle.image_size), seed)
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
        target_eval = make_loader(test.images, to_source[test.labels], positive_int(cfg, "eval_batch_size"),
                                  bundle.mean, bundle.std, **loader_args)
    log.info(f"domain adaptation: target {target.name} ({len(train)} unlabelled training images"
             f"{f', {len(test)} test images for the target accuracy' if scored else '; no target accuracy: its classes differ'}"
             f"), lambda {options.strength}{' ramped' if options.ramp else ''}")
    adversary = DomainAdversary(model, bundle.num_classes, cycle(batches, 1), options, epochs * batches_per_epoch,
                                loader_args["device"])
    return adversary, target_eval


def evaluate_best(model: nn.Module, run_dir: Path, loader: DeviceLoader, bundle: DatasetBundle, amp: Any,
                  topk: int, tta: str = "none") -> dict[str, Any]:
    """Load best.pt into the model and write the test split's reports into run_dir/eval (with test-time
    augmentation `tta`, as `imgcls eval tta=...`)."""
    if len(loader.labels) == 0:
        log.info("no test split (dataset.test_fraction=0): skipping the test evaluation")
        return {}
    best = torch.load(run_dir / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(best["state_dict"])
    probs_t, targets = predict_probs(model, loader, amp, tta)
    probs = probs_t.numpy()
    test = bundle.splits["test"]
    return write_eval_reports(run_dir / "eval", probs, targets.numpy(), bundle.classes,
                              read_ids(loader, test.ids), bundle.id_column, topk,
                              extra={"split": "test", "checkpoint": "checkpoints/best.pt", "epoch": best["epoch"],
                                     "tta": tta},
                              images=test.images.numpy() if test.in_memory else None)


def _results_table(run: Run, model_name: str, dataset: str, test: dict[str, Any]) -> None:
    s = run.summary
    rows = [("model", model_name), ("dataset", dataset), ("epochs", s.get("epochs_completed")),
            ("best epoch", s["best_epoch"]), ("best val accuracy", s["best_val_accuracy"]),
            ("test accuracy", test.get("accuracy"))]
    rows += [(k.replace("_", " "), v) for k, v in test.items() if k.startswith("top") or k == "f1_macro"]
    if s.get("target_accuracy") is not None:
        rows.append(("target accuracy", s["target_accuracy"]))
    rows += [("wall seconds", s["wall_seconds"]), ("train images/s", s["train_images_per_second"]),
             ("device", f"{s['device']} ({s['precision']})")]
    out.show(out.table("Results", ["", "value"], rows))

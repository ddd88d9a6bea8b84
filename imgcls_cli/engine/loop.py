"""The epochs of a training run: train (with mid-epoch checkpoints and signals), validate, keep best.pt and last.pt,
report, stop early."""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import torch
from torch import nn

from imgcls_cli import console as out
from imgcls_cli.data.loader import DeviceLoader
from imgcls_cli.engine import distributed, precise_bn
from imgcls_cli.engine.build import MIX_STREAM, compiled
from imgcls_cli.engine.distill import COLUMNS as DISTILL_COLUMNS
from imgcls_cli.engine.domain import COLUMNS as DOMAIN_COLUMNS
from imgcls_cli.engine.fit import EpochResult, NonFiniteLoss, Running, train_one_epoch
from imgcls_cli.engine.predictor import predict
from imgcls_cli.engine.prepare import Training
from imgcls_cli.engine.run import Interrupted, Run
from imgcls_cli.errors import DivergedError
from imgcls_cli.rundir import METRIC_COLUMNS, write_csv
from imgcls_cli.tasks import Multiclass

log = logging.getLogger("imgcls")
RANK_STREAM = 900_007  # offsets each data-parallel rank's MixUp/CutMix generator from rank 0's
STOP_CHECK = 10  # data-parallel ranks agree on a stop signal (SIGINT/SIGTERM) every this many optimizer steps


def run_epochs(run: Run, t: Training) -> None:
    """From the epoch after the last one done to spec.epochs, or until early stopping."""
    state, spec, ctx = t.state, t.spec, t.ctx
    if t.freezer is not None and ctx.enabled and spec.finetune.frozen_at(state.epoch + 1):
        t.freezer.freeze()  # before DistributedDataParallel takes note of the parameters that get gradients
    # net trains and validates; state.model holds the weights it saves. Several processes: DistributedDataParallel
    # trains, and each rank validates its shard with the model itself (DDP's forward would want every rank).
    net = compiled(ctx.wrap(state.model, t.device), spec.compile)
    eval_net = state.model if ctx.enabled else net
    if ctx.rank and not t.resumed:  # each rank its own dropout masks (a resumed rank restored its own RNG)
        torch.manual_seed(spec.seed * 1_000_003 + ctx.rank)
    for epoch in range(state.epoch + 1, spec.epochs + 1):
        started = time.perf_counter()
        result, lr = train_epoch(run, t, net, epoch)
        state.epoch = epoch
        state.trained(result.images, result.seconds)
        validated = t.has_val and (epoch % spec.val_every == 0 or epoch == spec.epochs)
        row, improved, texts = end_epoch(run, t, eval_net, result, lr, started, validated)
        report_epoch(run, t, row, result, improved, texts)
        run.check_stop(epoch, state.step)  # a signal during validation: the epoch is saved whole
        if validated and state.stopper.stop():
            log.info(f"early stopping: {state.stopper.metric} did not improve for {state.stopper.bad_epochs} "
                     f"validation(s) (early_stopping.patience={state.stopper.patience}); best epoch "
                     f"{state.best_epoch}")
            run.summary["early_stopped"] = True
            break


def train_epoch(run: Run, t: Training, net: nn.Module, epoch: int) -> tuple[EpochResult, float]:
    """One epoch's optimizer steps (the rest of it, for a resumed run that stopped in it); its result over every
    rank and the learning rate it started with."""
    state, spec, ctx, loader = t.state, t.spec, t.ctx, t.train_loader
    if t.freezer is not None:
        if spec.finetune.frozen_at(epoch):
            t.freezer.freeze()
        elif t.freezer.hooks:
            log.info(f"epoch {epoch}: the encoder trains from now on (finetune.unfreeze_epoch)")
            t.freezer.unfreeze()
    loader.set_epoch(epoch)
    mix_gen = torch.Generator().manual_seed(spec.seed * 1_000_003 + epoch + MIX_STREAM + ctx.rank * RANK_STREAM)
    running, position = None, state.position
    if position is not None:  # the rest of an epoch that a resumed run had begun
        loader.start_at(position["batch"], position["gen"])
        mix_gen.set_state(position["mix_gen"])
        running, state.position = Running(**position["running"]), None
    mix = (lambda x, y: t.mixer(x, y, mix_gen)) if t.mixer is not None else None
    lr = state.optimizer.param_groups[0]["lr"] if running is None else position["lr"]
    track_step = step_tracker(run, state.optimizer, running)

    def after_step(sums: Callable[[], Running]) -> None:
        state.after_step()
        if track_step is not None:
            track_step(state.step, sums)
        stop = run.stop_signal
        if ctx.enabled:  # the ranks stop together: they agree every STOP_CHECK steps
            stop = int(ctx.max([stop])[0]) if state.step % STOP_CHECK == 0 else 0
        if stop or (spec.every_n_steps and state.step % spec.every_n_steps == 0):
            state.save_last(state.weights, {"epoch": epoch, **loader.position(), "mix_gen": mix_gen.get_state(),
                                            "running": vars(sums()), "lr": lr})
        if stop:
            raise Interrupted(stop, epoch, state.step)

    try:
        with out.EpochProgress(f"epoch {epoch}/{spec.epochs}", loader.samples()) as bar:
            result = train_one_epoch(net, loader, state.optimizer, state.scheduler, t.loss_fn, t.amp, state.scaler,
                                     bar, mix=mix, running=running, after_step=after_step,
                                     options=t.step_options, first_step=state.step)
    except NonFiniteLoss as exc:
        raise DivergedError(f"training diverged: {exc} (epoch {epoch}); the last good checkpoint is kept; "
                            "lower optimizer.lr, or set on_nan=skip_batch to leave such batches out.") from None
    result = epoch_totals(result, ctx)
    if result.skipped:
        log.warning(f"epoch {epoch}: {result.skipped} batch(es) with a NaN or infinite loss left out "
                    "(on_nan=skip_batch)")
    return result, lr


def end_epoch(run: Run, t: Training, eval_net: nn.Module, result: EpochResult, lr: float, started: float,
              validated: bool) -> tuple[dict[str, Any], bool, list[str]]:
    """Validate, append the epoch's metrics row, keep best.pt and last.pt. Validation, best.pt and last.pt see
    batch-norm statistics recomputed with this epoch's weights; training goes on from its own running statistics
    (kept in last.pt too, for a resume to continue exactly)."""
    state, ctx = t.state, t.ctx
    recal = t.calibration is not None and precise_bn.active(t.spec.bn_recalibrate, state.step)
    with precise_bn.recalibrated([state.model, *state.eval_modules()], lambda: t.calibration, t.amp,
                                 ctx.sum if ctx.enabled else None, enabled=recal):
        row, texts = metrics_row(t, eval_net, result, lr, started, validated)
        state.rows.append(row)
        if run.main:
            columns = [*METRIC_COLUMNS, *(f"val_{k}" for k in t.step_options.task.scores_columns),
                       *state.columns(), *(DOMAIN_COLUMNS if t.adversary else ()),
                       *(DISTILL_COLUMNS if t.spec.distill.teacher else ())]
            write_csv(run.run_dir / "metrics.csv", state.rows, columns)
        if run.main:
            run.tracking.log_epoch(state.epoch, row)
        score = state.stopper.score(row) if t.has_val else result.accuracy
        improved = score is not None and (state.best_epoch == 0 or state.stopper.better(score, state.best_score))
        weights = state.weights() if run.main else None  # one copy for best.pt and last.pt
        if improved:
            state.best_score, state.best_epoch = score, state.epoch
            state.save_model("best.pt", weights, {k: v for k, v in row.items() if k != "epoch"})
        if validated:
            state.stopper.count(improved)
        for part in () if t.has_val else state.active("without_validation"):
            part.without_validation(state)
    state.save_last(lambda: weights, None, state.bn_stats() if recal and run.main else None)
    return row, improved, texts


def step_tracker(run: Run, optimizer: torch.optim.Optimizer,
                 running: Running | None) -> Callable[[int, Callable[[], Running]], None] | None:
    """When a tracker wants each optimizer step (TensorBoard): a function of (step, sums) that logs the step's mean
    loss (from the epoch's running sums, rank 0's images) and the lr it took."""
    if not (run.main and run.tracking.wants_steps):
        return None
    before = [running or Running(), optimizer.param_groups[0]["lr"]]

    def track(step: int, sums: Callable[[], Running]) -> None:
        now, (then, lr) = sums(), before
        loss = (now.loss_sum - then.loss_sum) / max(now.seen - then.seen, 1)
        run.tracking.log_step(step, {"train/loss": loss, "train/lr": lr})
        before[:] = [now, optimizer.param_groups[0]["lr"]]

    return track


def metrics_row(t: Training, eval_net: nn.Module, result: EpochResult, lr: float, started: float,
                validated: bool) -> tuple[dict[str, Any], list[str]]:
    """The epoch's metrics.csv row (validated or not), and what the registered features add to its log line."""
    task = t.step_options.task
    evaluate = lambda module: validation(module, t.eval_loaders["val"], t.amp, t.ctx, task)  # noqa: E731
    scores = validation_scores(eval_net, t.eval_loaders["val"], t.amp, t.ctx, task) if validated else {}
    row = {"epoch": t.state.epoch, "lr": lr, "train_loss": result.loss, "train_accuracy": result.accuracy,
           "val_loss": scores.get("loss"), "val_accuracy": scores.get("accuracy"),
           "epoch_seconds": round(time.perf_counter() - started, 3),
           "images_per_second": round(result.images_per_second, 1)}
    row.update({f"val_{k}": scores.get(k) for k in task.scores_columns})
    if result.distill_loss is not None:
        row["distill_loss"] = result.distill_loss
    if t.adversary is not None:
        row.update(t.adversary.epoch_metrics())
        if t.target_eval is not None:
            row["target_accuracy"] = validation(eval_net, t.target_eval, t.amp)[1]
    texts = [part.after_validation(t.state, row, evaluate) for part in t.state.active("after_validation")] \
        if validated else []
    return row, texts


def report_epoch(run: Run, t: Training, row: dict[str, Any], result: EpochResult, improved: bool,
                 texts: list[str]) -> None:
    """The epoch's log line and the summary so far."""
    state = t.state
    text = f"  val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}" if row["val_loss"] is not None \
        else ""
    text += f"  val_map {row['val_map']:.4f}" if row.get("val_map") is not None else ""
    text += "".join(texts)
    text += f"  target_acc {row['target_accuracy']:.4f}" if row.get("target_accuracy") is not None else ""
    log.info(f"epoch {state.epoch}/{t.spec.epochs}  lr {row['lr']:.3g}  train_loss {result.loss:.4f}  train_acc "
             f"{result.accuracy:.4f}{text}  {row['epoch_seconds']:.1f}s  "
             f"{result.images_per_second:.0f} img/s{'  *' if improved else ''}")
    best_row = next((r for r in state.rows if r["epoch"] == state.best_epoch), {})
    run.summary.update(best_epoch=state.best_epoch, best_val_accuracy=best_row.get("val_accuracy"),
                       epochs_completed=state.epoch)
    if "val_map" in best_row:  # multilabel: the score that chose best.pt
        run.summary["best_val_map"] = best_row["val_map"]
    if t.target_eval is not None:  # best.pt's accuracy on the target domain's test split
        run.summary["target_accuracy"] = best_row.get("target_accuracy")


def validation(model: nn.Module, loader: DeviceLoader, amp: Any, ctx: distributed.Dist | None = None,
               task: Any = None) -> tuple[float, float]:
    """(loss, accuracy) of the model on the loader's split (its shards summed over the ranks, with ctx)."""
    scores = validation_scores(model, loader, amp, ctx, task)
    return scores["loss"], scores["accuracy"]


def validation_scores(model: nn.Module, loader: DeviceLoader, amp: Any, ctx: distributed.Dist | None = None,
                      task: Any = None) -> dict[str, float]:
    """loss, accuracy and the task's own scores (multilabel: map) of the model on the loader's split (loss and
    accuracy over every rank's shard, with ctx)."""
    task = task or Multiclass()
    predicted = predict(model, loader, amp, logits=True)
    logits, targets = predicted.outputs, predicted.targets
    n = len(targets)
    loss = task.loss_sum(logits, targets) if n else 0.0
    correct = task.correct(logits, targets).item() if n else 0
    if ctx is not None:
        loss, correct, n = ctx.sum([loss, correct, n])
    return {"loss": loss / max(n, 1), "accuracy": correct / max(n, 1), **(task.scores(logits, targets) if n else {})}


def epoch_totals(result: EpochResult, ctx: distributed.Dist) -> EpochResult:
    """An epoch's training loss and accuracy over every rank's images; the slowest rank's seconds."""
    if not ctx.enabled:
        return result
    loss, correct, images, skipped, distilled = ctx.sum([
        result.loss * result.images, result.accuracy * result.images, result.images, result.skipped,
        (result.distill_loss or 0.0) * result.images])
    return EpochResult(loss / max(images, 1), correct / max(images, 1), int(images), ctx.max([result.seconds])[0],
                       int(skipped), None if result.distill_loss is None else distilled / max(images, 1))

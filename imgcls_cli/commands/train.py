"""`imgcls train`: the Hydra app over conf/train.yaml. The config is checked into a TrainSpec here, once, before
config.yaml is written; what the command line and the conf files decide is resolved here too, not in the engine."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from imgcls_cli.commands.common import command_line, plain, run_command, task_overrides
from imgcls_cli.commands.configs import option_configs
from imgcls_cli.errors import UserError
from imgcls_cli.paths import CONF_DIR
from imgcls_cli.rundir import write_text_atomic

log = logging.getLogger("imgcls")


def explicit_keys(overrides: list[str]) -> list[str]:
    """The keys a command line's overrides set (`+key=`, `~key` and `key=` alike)."""
    return [o.split("=", 1)[0].lstrip("+~") for o in overrides]


def dataset_configs() -> dict[str, dict[str, Any]]:
    """Each dataset option's config as `dataset=<option>` composes it: train.yaml's dataset keys under the option's
    own (what domain.target=<option> trains against)."""
    base = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "train.yaml"), resolve=False)["dataset"]
    return {name: {**base, **own} for name, own in option_configs("dataset").items()}  # type: ignore[dict-item]


def parse(cfg: DictConfig, explicit: list[str]) -> tuple[Any, dict[str, Any] | None]:
    """(the TrainSpec, init=PATH's checkpoint or None). dataset.image_size becomes the size init=PATH trained at,
    or the model's own resolution, unless the command line set it: in cfg too, so that config.yaml says the size
    the run trains at."""
    from imgcls_cli.checkpoint import load_checkpoint
    from imgcls_cli.specs.dataset import DatasetSpec
    from imgcls_cli.specs.train import TrainSpec

    spec = TrainSpec.parse(plain(cfg), explicit, dataset_configs())
    spec = replace(spec, tracking=replace(spec.tracking, sweep_dir=sweep_dir()))
    init = load_checkpoint(spec.init) if spec.init else None
    size = asked_image_size(spec, init)
    if size is not None:
        cfg.dataset.image_size = size
        config = plain(cfg)
        spec = replace(spec, dataset=DatasetSpec.from_config(config["dataset"]), config=config)
    return spec, init


def sweep_dir() -> str | None:
    """The sweep folder when this run is a job of a sweep (its tracking parent run), else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get() if HydraConfig.initialized() else None
    return str(hc.sweep.dir) if hc is not None and hc.mode == RunMode.MULTIRUN else None


def asked_image_size(spec: Any, init: dict[str, Any] | None) -> int | None:
    """The size init=PATH was trained at, or the model's own resolution (EfficientNet's scaled one, pretrained
    weights' crop), where it is not dataset.image_size and the command line did not set dataset.image_size."""
    from imgcls_cli.engine.distributed import quiet_rank
    from imgcls_cli.models import input_size

    if "dataset.image_size" in spec.explicit_keys:
        return None
    wanted = int(init["input"]["size"]) if init else input_size(spec.model.name, spec.model_kwargs)
    have = spec.dataset.image_size  # None: auto
    if wanted is None or wanted == have:
        return None
    if not quiet_rank():
        asker = f"init={spec.init}" if init else f"model {spec.model.name}"
        given = spec.config["dataset"].get("image_size")
        log.info(f"{asker} asks for {wanted}x{wanted} inputs: dataset.image_size {given} -> {wanted} (set "
                 "dataset.image_size to choose)")
    return int(wanted)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """The run's best validation accuracy: what a sweeper maximizes (+hparams_search=optuna).

    None when the job failed or diverged (a failed row in the sweep summary): Optuna's sweeper records a failed
    trial for a value that is not a number, and the study goes on.
    """
    from hydra.core.hydra_config import HydraConfig

    from imgcls_cli.engine.distributed import quiet_rank
    from imgcls_cli.engine.resume import ResumeRefused
    from imgcls_cli.engine.train import Run, run_training  # torch loads after Hydra has checked the arguments

    explicit = explicit_keys(task_overrides())
    parsed: dict[str, Any] = {}  # the spec and init=PATH's checkpoint, parsed once before config.yaml is written

    def check(cfg: DictConfig) -> None:
        try:
            parsed["spec"], parsed["init"] = parse(cfg, explicit)
        except UserError as exc:  # a run refused before it starts is a failed run (summary.json says why)
            Run(plain(cfg), HydraConfig.get().runtime.output_dir).write_summary("failed", error=str(exc))
            raise

    def train(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        try:
            return run_training(parsed["spec"], run_dir, init=parsed["init"], command=command_line())
        except ResumeRefused as exc:  # the run is left as it was: config.yaml says what it trained with again
            if exc.config is not None and not quiet_rank():
                write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(exc.config)))
            raise

    summary = run_command(cfg, train, check=check)
    if summary is None or summary.get("status") != "completed":
        return None
    return summary.get("best_val_accuracy")

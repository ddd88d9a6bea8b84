"""resume=: which runs can be continued (and what a resume changes), and what it reads back of the run."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from imgcls_cli.checkpoint import load_checkpoint
from imgcls_cli.errors import UserError
from imgcls_cli.rundir import read_csv

log = logging.getLogger("imgcls")
# dataset keys that change where or how images are kept, not which images a run sees or how
CARRY_OVER_DATASET_KEYS = ("in_memory", "memory_budget_gb", "cache", "cache_dir", "download")


class ResumeRefused(UserError):
    """resume= names a run this one cannot continue: nothing of that run is changed. `config` is the config it
    was trained with (what its config.yaml said before this command wrote its own), when last.pt holds one."""

    def __init__(self, message: str, config: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.config = config


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
    if not path.is_file():
        return []
    rows = []
    for row in read_csv(path):
        parsed: dict[str, Any] = {k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
        parsed["epoch"] = int(parsed["epoch"])
        rows.append(parsed)
    return rows


def load_resume_state(cfg: dict[str, Any], run_dir: Path, world_size: int,
                      explicit_keys: set[str]) -> dict[str, Any] | None:
    """resume=...: last.pt of the run being continued (None when there is none), which must have trained in as
    many processes and with settings whose state carries over."""
    last = run_dir / "checkpoints" / "last.pt"
    if not (cfg.get("resume") and last.is_file()):
        return None
    state = load_checkpoint(last)
    if "best" not in state:
        raise ResumeRefused(f"{last} holds no training state to resume from (written by another version?).")

    saved = int((state.get("distributed") or {}).get("world_size", 1))
    trained_with = state["config"] if isinstance(state.get("config"), dict) else None
    if saved != world_size:
        raise ResumeRefused(f"resume: {run_dir} trained in {saved} process(es) and continues only in {saved} "
                            f"(distributed.nproc={saved}, or torchrun --nproc_per_node), not {world_size}: "
                            "the data order and the images per step depend on it.", trained_with)
    changed = unresumable_changes(state.get("config") or {}, cfg, explicit_keys)
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise ResumeRefused(f"resume: {run_dir} trained with other settings, whose state cannot carry over: "
                            f"{shown}; resume with the settings it was trained with, or start a new run (no "
                            "resume=).", trained_with)
    # What auto chose when the run started is kept: the files of a folder may have changed since.
    dataset = cfg["dataset"]
    for key, field in (("image_size", "size"), ("channels", "channels")):
        if dataset.get(key) == "auto":
            dataset[key] = int(state["input"][field])
    if cfg.get("batch_size") == "auto" and isinstance((state.get("config") or {}).get("batch_size"), int):
        cfg["batch_size"] = state["config"]["batch_size"]
    return state

"""`imgcls list`: what each registry holds, the config options of each group, and each model's size and cost."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Sequence

from rich.table import Table

from imgcls_cli import console as out
from imgcls_cli.commands.configs import option_configs
from imgcls_cli.errors import UserError

GROUPS = {"models": "model", "datasets": "dataset", "augments": "augment", "optimizers": "optimizer",
          "schedules": "schedule"}
NUM_CLASSES, CHANNELS, IMAGE_SIZE = 10, 3, 32  # the input every model is counted at, unless it asks for another
MODEL_COLUMNS = ["model=", "name", "params (M)", "MACs", "input", "note"]
NUMERIC_MODEL_COLUMNS = {2, 3, 4}  # right-aligned


@dataclass
class ModelPreset:
    """One row of the model table: a config option (or a registered model that has none) and its YAML keys."""

    label: str  # what follows model= (a registered model without a config option: its name)
    name: str  # the registered builder
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelCost:
    params: int
    macs: float
    image_size: int


@dataclass
class ListTable:
    """One table of `imgcls list`, printed with rich or as a GitHub markdown table."""

    title: str
    columns: list[str]
    rows: list[list[object]]
    numeric: set[int] = field(default_factory=set)  # right-aligned columns
    footer: str | None = None

    def rich(self) -> Table:
        table = Table(title=self.title, title_justify="left")
        for i, column in enumerate(self.columns):
            table.add_column(column, justify="right" if i in self.numeric else "left")
        for row in self.rows:
            table.add_row(*[out.fmt(v) for v in row])
        return table

    def markdown(self) -> str:
        def cells(values: Sequence[object]) -> str:
            return "| " + " | ".join(out.fmt(v).replace("|", "\\|") for v in values) + " |"

        align = ["---:" if i in self.numeric else "---" for i in range(len(self.columns))]
        return "\n".join([cells(self.columns), "| " + " | ".join(align) + " |", *map(cells, self.rows)])


def _registry(group: str):
    if group == "model":
        from imgcls_cli.models import MODELS as registry
    elif group == "dataset":
        from imgcls_cli.data.datasets import DATASETS as registry
    elif group == "augment":
        from imgcls_cli.data.augment import AUGMENTS as registry
    elif group == "optimizer":
        from imgcls_cli.optim import OPTIMIZERS as registry
    else:
        from imgcls_cli.schedule import SCHEDULES as registry
    return registry


def _options(group: str) -> dict[str, str]:
    """Config option -> the registry name it selects (its `name:` key)."""
    return {option: str(cfg.get("name", option)) for option, cfg in option_configs(group).items()}


def model_presets() -> list[ModelPreset]:
    """Each model config option with its keys, then each registered model that no option selects."""
    from imgcls_cli.models import MODELS

    presets = [ModelPreset(option, str(cfg.pop("name", option)), cfg)
               for option, cfg in option_configs("model").items()]
    selected = {p.name for p in presets}
    return presets + [ModelPreset(name, name) for name in MODELS.names() if name not in selected]


def model_cost(preset: ModelPreset, image_size: int | None = None) -> ModelCost:
    """Parameters and multiply-accumulates of one forward pass of one image, at image_size or else the size the
    model asks for (32 when it asks for none).

    The model is built on the meta device (no memory, no arithmetic), or on the CPU for a builder that needs
    real values at build time. MACs are torch's FlopCounterMode FLOPs / 2 (convolutions and matmuls).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from imgcls_cli.models import create_model, input_size

    size = image_size or input_size(preset.name, preset.kwargs) or IMAGE_SIZE
    kwargs = {**preset.kwargs, "num_classes": NUM_CLASSES, "in_channels": CHANNELS, "image_size": size}

    def count(device: str) -> ModelCost:
        with torch.device(device):
            model = create_model(preset.name, **kwargs).eval()
            x = torch.zeros(1, CHANNELS, size, size)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        return ModelCost(sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 2, size)

    try:
        return count("meta")
    except UserError:
        raise
    except Exception:  # noqa: BLE001 - e.g. .item() at build time: the CPU gives the same numbers, slower
        return count("cpu")


def format_macs(macs: float) -> str:
    value, unit = (macs / 1e9, "G") if macs >= 1e9 else (macs / 1e6, "M")
    return f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f}{unit}"


def _variable_note(name: str) -> str | None:
    """A note for a model whose architecture is itself a setting, so that no single row describes it: the builder
    states it with an attribute, `builder.arch_note = lambda: "any of N models: model.arch=NAME"`."""
    from imgcls_cli.models import MODELS

    note = getattr(MODELS.get(name), "arch_note", None)
    return note() if note is not None else None


def _model_rows(presets: Sequence[ModelPreset]) -> list[list[object]]:
    from imgcls_cli.models import MODELS

    rows: list[list[object]] = []
    for preset in presets:
        note = _variable_note(preset.name) if preset.name in MODELS else f"model '{preset.name}' is not registered"
        if note is not None:
            rows.append([preset.label, preset.name, "", "", "", note])
            continue
        try:
            cost = model_cost(preset)
        except Exception as exc:  # noqa: BLE001 - one broken model must not hide the others
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            rows.append([preset.label, preset.name, "", "", "", f"fails: {type(exc).__name__}: {message}"[:160]])
            continue
        size = cost.image_size
        rows.append([preset.label, preset.name, f"{cost.params / 1e6:.2f}", format_macs(cost.macs),
                     f"{CHANNELS}x{size}x{size}", "" if size == IMAGE_SIZE else "asks for this input size"])
    return rows


def _arch_footer(presets: Sequence[ModelPreset]) -> str | None:
    """The architecture names of the listed models that list theirs (`builder.arch_choices = lambda: [...]`)."""
    from imgcls_cli.models import MODELS

    lines = []
    for name in dict.fromkeys(p.name for p in presets if p.name in MODELS):
        choices = getattr(MODELS.get(name), "arch_choices", None)
        if choices is not None:
            lines.append(f"{name} model.arch choices: " + ", ".join(choices()))
    return "\n".join(lines) or None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2, like every other mistake
        raise UserError(f"imgcls list: {message}")


def _group_table(what: str) -> ListTable:
    group = GROUPS[what]
    if group == "model":
        presets = model_presets()
        title = (f"models: parameters and MACs of one image, {NUM_CLASSES} classes, input "
                 f"{CHANNELS}x{IMAGE_SIZE}x{IMAGE_SIZE} unless the model asks for another")
        return ListTable(title, MODEL_COLUMNS, _model_rows(presets), NUMERIC_MODEL_COLUMNS, _arch_footer(presets))
    options = _options(group)
    names = _registry(group).names()
    rows: list[list[object]] = [[n, ", ".join(o for o, v in options.items() if v == n)] for n in names]
    if group == "augment":
        rows = [[n, ""] for n in names] + [[f"preset {o}", f"augment={o}"] for o in options]
    return ListTable(what, ["name", f"{group}= options"], rows)


def list_command(argv: list[str]) -> int:
    parser = _Parser(prog="imgcls list", description="List registered components.")
    parser.add_argument("what", nargs="?", choices=list(GROUPS), help="one registry (default: all)")
    parser.add_argument("--markdown", action="store_true", help="print GitHub markdown tables")
    args = parser.parse_args(argv)
    for what in [args.what] if args.what else list(GROUPS):
        table = _group_table(what)
        if args.markdown:
            print(f"{table.title}\n\n{table.markdown()}\n")
            if table.footer:
                print(f"{table.footer}\n")
        else:
            out.console().print(table.rich())
            if table.footer:
                out.console().print(table.footer)
    return 0

"""`imgcls list`: what each registry holds, and the config options of each group."""
from __future__ import annotations

import argparse

from imgcls_cli import console as out
from imgcls_cli.errors import UserError
from imgcls_cli.paths import CONF_DIR

GROUPS = {"models": "model", "datasets": "dataset", "augments": "augment", "optimizers": "optimizer",
          "schedules": "schedule"}


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
    from omegaconf import OmegaConf

    options = {}
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        options[path.stem] = str(OmegaConf.load(path).get("name", path.stem))
    return options


def _model_rows(options: dict[str, str]) -> list[list[object]]:
    import torch

    from imgcls_cli.models import MODELS, create_model

    rows = []
    for name in MODELS.names():
        model = create_model(name, num_classes=10, in_channels=3, image_size=32)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        used_by = ", ".join(o for o, n in options.items() if n == name)
        rows.append([name, f"{params:.2f}", used_by])
        del model
    torch.set_grad_enabled(True)
    return rows


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2, like every other mistake
        raise UserError(f"imgcls list: {message}")


def list_command(argv: list[str]) -> int:
    parser = _Parser(prog="imgcls list", description="List registered components.")
    parser.add_argument("what", nargs="?", choices=list(GROUPS), help="one registry (default: all)")
    args = parser.parse_args(argv)
    for what in [args.what] if args.what else list(GROUPS):
        group = GROUPS[what]
        options = _options(group)
        if group == "model":
            rows = _model_rows(options)
            out.console().print(out.table("models (parameters at 32x32x3, 10 classes)",
                                          ["name", "params (M)", f"{group}= options"], rows))
            continue
        names = _registry(group).names()
        rows = [[n, ", ".join(o for o, v in options.items() if v == n)] for n in names]
        if group == "augment":
            rows = [[n, ""] for n in names] + [[f"preset {o}", f"augment={o}"] for o in options]
        out.console().print(out.table(what, ["name", f"{group}= options"], rows))
    return 0

"""TrackingSpec: where a training run is also recorded (tracking=none|mlflow|tensorboard, and tensorboard=true),
checked at the command edge: an unknown backend or a missing package fails before any data is loaded."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping

from imgcls_cli.errors import UserError, shown

# backend -> (the module it needs, the extra that installs it)
PACKAGES = {"mlflow": ("mlflow", "mlflow"), "tensorboard": ("tensorboard", "tensorboard")}


@dataclass(frozen=True)
class TrackingSpec:
    """backends: the trackers of the run, in order (none: an empty tuple); uri: MLflow's tracking URI (None: the
    local SQLite store under outputs/mlflow/); sweep_dir: the sweep folder when the run is a job of one (its
    parent run), set by the command."""

    backends: tuple[str, ...] = ()
    uri: str | None = None
    experiment: str = "imgcls"
    log_checkpoints: bool = False
    sweep_dir: str | None = None

    @classmethod
    def parse(cls, cfg: Mapping[str, Any] | None, tensorboard: bool = False) -> TrackingSpec:
        from imgcls_cli.tracking.api import BACKENDS

        cfg = dict(cfg or {})
        backend = cfg.get("backend") or "none"
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise UserError(f"tracking.backend: {BACKENDS.unknown_message(str(backend))}")
        backends = tuple(dict.fromkeys(b for b in (backend, "tensorboard" if tensorboard else "none")
                                       if b != "none"))
        for name in backends:
            require_package(name)
        uri = cfg.get("uri")
        if uri is not None and (not isinstance(uri, str) or not uri.strip()):
            raise UserError(f"tracking.uri must be a tracking URI (a path, sqlite:///FILE or http://HOST:PORT) or "
                            f"null, not {shown(str(uri))}.")
        experiment = cfg.get("experiment") or "imgcls"
        if not isinstance(experiment, str):
            raise UserError(f"tracking.experiment must be a name, not {shown(str(experiment))}.")
        log_checkpoints = cfg.get("log_checkpoints", False)
        if log_checkpoints not in (True, False, None):
            raise UserError(f"tracking.log_checkpoints must be true or false, not '{log_checkpoints}'.")
        return cls(backends, uri, experiment, bool(log_checkpoints))


def require_package(backend: str) -> None:
    """A one-line error naming the extra to install when the backend's package is missing."""
    if backend not in PACKAGES:
        return
    module, extra = PACKAGES[backend]
    try:
        importlib.import_module(module)
    except ImportError:
        setting = "tensorboard=true or tracking=tensorboard" if backend == "tensorboard" else f"tracking={backend}"
        raise UserError(f"{setting} needs the {module} package: pip install 'imgcls[{extra}]'.") from None

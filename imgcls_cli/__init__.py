"""imgcls: train, evaluate and run image classifiers from Hydra configs.

The Python API (docs/api.md) loads on first use, so that `import imgcls_cli` stays cheap:
`load_model(path).predict(images)`, `train(overrides)`, `evaluate(overrides)`, `UserError`.
"""
__version__ = "0.1.0"
API = ("Model", "UserError", "evaluate", "load_model", "train")
__all__ = ["__version__", *API]


def __getattr__(name: str) -> object:
    """The API's names, loaded on first access (PEP 562): never while a module of the package is being imported,
    so the façade adds no import-order dependency (imgcls_cli.api sits at the top, beside imgcls_cli.cli)."""
    if name in API:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module 'imgcls_cli' has no attribute '{name}'")

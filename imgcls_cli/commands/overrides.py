"""Every key a command line sets is a key of the config: a misspelled one is a one-line error, never a no-op.

Hydra refuses `epoch=3` (there is no key `epoch`) but advises `+epoch=3`, which adds a key that nothing reads.
Here a `+KEY=` or `++KEY=` override must name a key the composed config has, or one of the few places that take
keys no config file lists (FREE_KEYS), and Hydra's own refusal of an unknown key is said with the keys that come
closest. The check runs before Hydra does anything (for a run, `--cfg job`, and each job of a sweep before the
first starts); only a command line with a `+KEY`/`++KEY` override, or a mistake, pays for a composition.
"""
from __future__ import annotations

import argparse
import difflib
import inspect
import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imgcls_cli.errors import UserError, shown
from imgcls_cli.paths import CONF_DIR

MAX_OPTION_CHARS = 4096  # an option longer than a path may be (PATH_MAX) is a mistake; lists go in files
MAX_NAME_CHARS = 200  # a config option is a file name: <= 255 bytes with .yaml, on every file system
MAX_SWEEP_CONFIGS = 64  # group choices of a sweep composed to check its keys
# Where keys no config file lists are taken, and who checks them (hydra.* keys are Hydra's own to check):
FREE_KEYS = {
    "dataset": "eval without dataset=: the keys of any dataset option or the shared ones (train.yaml's dataset:), "
               "applied to the checkpoint's own dataset",
    "augment": "augment.<op> and augment.<op>.<param> for any registered op (imgcls list augments) and its "
               "parameters, so that ops can be added to a preset",
    "model": "model=tv and model=timm: the library's own keyword arguments, checked by it when the model is built",
}
LIBRARY_MODELS = ("tv", "timm")  # models whose builder hands model.* keys to its library (torchvision, timm)
_UNKNOWN = re.compile(r"Could not override '([^']+)'|Could not delete from config\. '([^']+)' does not exist")


def check_command_line(command: str, args: list[str]) -> None:
    """A UserError for the first option of args (a Hydra command line) that is too long, names a config option
    too long to be one, or sets a key the config does not have."""
    for arg in args:
        if len(arg) > MAX_OPTION_CHARS:
            raise UserError(f"option {shown(arg)} is longer than {MAX_OPTION_CHARS} characters: shorten it "
                            "(long lists of files go in a file: inputs=@list.txt).")
    parsed = _parse_args(args)
    if parsed is None or parsed.help or parsed.hydra_help or parsed.shell_completion:
        return
    overrides = _parse_overrides(parsed.overrides)
    for override in overrides:
        if override.is_hydra_override() or not _is_group(override, _config_dirs(parsed)):
            continue
        for name in _plain_choices(override):
            if len(name) > MAX_NAME_CHARS:
                raise UserError(f"unknown {override.key_or_group} {shown(name)}: `imgcls {command} --help` "
                                "lists the options of each group.")
    added = [o for o in overrides if (o.is_add() or o.is_force_add()) and _is_app_key(o, parsed)]
    if added:
        with _Composer(command, parsed, overrides) as composer:
            for override in added:
                composer.check_added(override)


def unknown_key_message(command: str, args: list[str], error: Exception) -> str | None:
    """For Hydra's refusal of a key (`Could not override 'epoch'`): the one line that says which key is unknown and
    the closest known ones; None for any other error."""
    match = _UNKNOWN.search(str(error))
    parsed = _parse_args(args)
    if match is None or parsed is None:
        return None
    key = match.group(1) or match.group(2)
    try:
        return _unknown_key_message(command, parsed, key)
    except Exception:  # the composition failed on something else: Hydra's own message stands
        return None


def _unknown_key_message(command: str, parsed: argparse.Namespace, key: str) -> str:
    overrides = _parse_overrides(parsed.overrides)
    line = next((o.input_line for o in overrides if o.key_or_group == key), f"{key}=...")
    with _Composer(command, parsed, overrides) as composer:
        if composer.repository.group_exists(key):  # a group without a default: Hydra's advice (+group=) is right
            return None
        missing = [config for config in composer.configs() if not composer.has(config.cfg, key)]
        if not missing:  # a sweep over groups: each job has the key, the config Hydra composes first has not
            return (f"{key} is a key of every job of the sweep but not of the config Hydra composes first, with "
                    f"each swept group at its default: write ++{line.lstrip('+')} to set it in every job.")
        if composer.taken(key, missing[0]):  # eval's dataset.KEY, model=tv's kwargs, augment ops: added, not set
            return (f"{shown(key)} is not in the composed config but may be added: write +{line.lstrip('+')} "
                    "(a leading + adds a key).")
        return composer.unknown(key, missing[0])


def _parse_args(args: list[str]) -> argparse.Namespace | None:
    """Hydra's own reading of the command line; None where Hydra will refuse it itself."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        parsed, unknown = parser.parse_known_args(args)
    except (argparse.ArgumentError, SystemExit):
        return None
    return None if unknown else parsed


def _parse_overrides(lines: list[str]) -> list[Any]:
    """Hydra's overrides (MAX_OPTION_CHARS keeps numbers below the 4,300 digits Python refuses to read)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(lines)


def _config_dirs(parsed: argparse.Namespace) -> list[Path]:
    dirs = [CONF_DIR]
    if parsed.config_dir:
        dirs.append(Path(parsed.config_dir).expanduser())
    return dirs


def _is_group(override: Any, dirs: list[Path]) -> bool:
    """Whether the override picks a config option (group=option) rather than setting a key: its name is a folder
    of configs (a cheap look; a composition asks Hydra's repository)."""
    key = override.key_or_group
    if override.package is not None or "/" in key:
        return True
    return "." not in key and any((d / key).is_dir() for d in dirs)


def _is_app_key(override: Any, parsed: argparse.Namespace) -> bool:
    return not override.is_hydra_override() and not _is_group(override, _config_dirs(parsed))


def _plain_choices(override: Any) -> list[str]:
    """The option names a group override asks for, where it lists them (not for glob(...))."""
    try:
        if override.is_sweep_override():
            return [str(v) for v in override.sweep_string_iterator()]
        value = override.value()
    except Exception:  # glob() and other sweeps: Hydra lists the options itself
        return []
    return [value] if isinstance(value, str) else []


def _dotted(cfg: Any, prefix: str = "") -> Iterator[str]:
    """Every key path of a config, dicts and leaves."""
    from omegaconf import DictConfig

    if isinstance(cfg, DictConfig):
        for key in cfg.keys():
            path = f"{prefix}{key}"
            yield path
            try:
                child = cfg._get_node(key)
            except Exception:
                continue
            yield from _dotted(child, path + ".")


class _Config:
    """One composed config of the command line, and the group choices it was composed with."""

    def __init__(self, cfg: Any, choices: dict[str, str]) -> None:
        self.cfg = cfg
        self.choices = choices  # the swept groups' choices ({} without a sweep over groups)


class _Composer:
    """Composes the command's config as Hydra will (same search path, same groups), without the keys in question."""

    def __init__(self, command: str, parsed: argparse.Namespace, overrides: list[Any]) -> None:
        self.command, self.parsed, self.overrides = command, parsed, overrides
        self.config_name = parsed.config_name or command
        self.hydra: Any = None

    def __enter__(self) -> _Composer:
        from hydra._internal.hydra import Hydra
        from hydra._internal.utils import create_automatic_config_search_path
        from hydra.core.config_search_path import SearchPathQuery
        from hydra.core.global_hydra import GlobalHydra

        import imgcls_cli.commands.common  # noqa: F401  (registers the resolvers the configs use)

        search_path = create_automatic_config_search_path(
            None, f"imgcls_cli.commands.{self.command}", self.parsed.config_path or str(CONF_DIR))
        if self.parsed.config_dir is not None:
            search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(self.parsed.config_dir)}",
                                anchor=SearchPathQuery(provider="schema"))
        GlobalHydra.instance().clear()
        self.hydra = Hydra.create_main_hydra2(task_name=self.command, config_search_path=search_path)
        self.repository = self.hydra.config_loader.repository
        self._configs: list[_Config] | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()

    # ------------------------------------------------------------------------------------------- composing
    def _selections(self) -> tuple[list[str], list[tuple[str, list[str]]]]:
        """The overrides that shape the config (Hydra's own and group choices), and the swept groups' choices."""
        fixed, swept = [], []
        for o in self.overrides:
            if o.is_hydra_override():
                if not o.is_sweep_override():
                    fixed.append(o.input_line)
            elif self.repository.group_exists(o.key_or_group) or o.package is not None:
                if o.is_sweep_override():
                    swept.append((o.key_or_group, self._sweep_choices(o)))
                else:
                    fixed.append(o.input_line)
        return fixed, swept

    def _sweep_choices(self, override: Any) -> list[str]:
        from hydra.core.override_parser.types import Glob

        value = override.value()
        if isinstance(value, Glob):
            return value.filter(self.hydra.config_loader.get_group_options(override.key_or_group))
        return [str(v) for v in override.sweep_string_iterator()]

    def configs(self) -> list[_Config]:
        """The config of each combination of swept group choices (one without a sweep over groups)."""
        from hydra.types import RunMode

        if self._configs is None:
            fixed, swept = self._selections()
            names = [group for group, _ in swept]
            combos = itertools.islice(itertools.product(*[choices for _, choices in swept]), MAX_SWEEP_CONFIGS)
            self._configs = []
            for combo in combos:
                picked = [f"{group}={choice}" for group, choice in zip(names, combo)]
                cfg = self.hydra.compose_config(self.config_name, fixed + picked, run_mode=RunMode.MULTIRUN,
                                                with_log_configuration=False, validate_sweep_overrides=False)
                self._configs.append(_Config(cfg, dict(zip(names, combo))))
        return self._configs

    @staticmethod
    def has(cfg: Any, key: str) -> bool:
        from omegaconf import DictConfig, ListConfig

        node: Any = cfg
        for part in key.split("."):
            if isinstance(node, DictConfig) and part in node:
                node = node._get_node(part)
            elif isinstance(node, ListConfig) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
                node = node._get_node(int(part))
            else:
                return False
        return True

    # ----------------------------------------------------------------------------------------- free keys
    def _option_keys(self, group: str, options: list[str] | None = None) -> dict[str, set[str]]:
        """{option: its top-level keys} for the options of a group (all of them by default)."""
        found = {}
        for option in options if options is not None else self.hydra.config_loader.get_group_options(group):
            result = self.repository.load_config(f"{group}/{option}")
            if result is not None and hasattr(result.config, "keys"):
                found[option] = {str(k) for k in result.config.keys() if k != "defaults"}
        return found

    def _shared_dataset_keys(self) -> set[str]:
        result = self.repository.load_config("train")
        dataset = result.config.get("dataset") if result is not None else None
        return {str(k) for k in dataset.keys()} if hasattr(dataset, "keys") else set()

    def _free_keys(self, config: _Config, group: str) -> set[str] | None:
        """The keys under group that no config lists but that are taken, for this config; None: no free keys."""
        from omegaconf import OmegaConf

        if group == "dataset" and self.command == "eval":
            chosen = OmegaConf.select(config.cfg, "hydra.runtime.choices.dataset", default=None)
            options = self._option_keys("dataset", None if chosen in (None, "null") else [str(chosen)])
            return self._shared_dataset_keys().union(*options.values())
        if group == "augment" and self.has(config.cfg, "augment"):
            return set(_augment_keys())  # imports torch: only for an augment key
        return None

    def taken(self, key: str, config: _Config) -> bool:
        from omegaconf import OmegaConf

        group, _, rest = key.partition(".")
        if not rest or group not in FREE_KEYS:
            return False
        if group == "model" and OmegaConf.select(config.cfg, "model.name", default=None) in LIBRARY_MODELS:
            return True
        allowed = self._free_keys(config, group)
        if group == "dataset":  # dataset.mean.0 is inside dataset.mean
            rest = rest.split(".")[0]
        return allowed is not None and rest in allowed

    # ------------------------------------------------------------------------------------------- checking
    def check_added(self, override: Any) -> None:
        """`+KEY=`/`++KEY=` in every config of the command line: the key exists (for ++; + then is Hydra's own
        error) or it is taken where free keys are."""
        key = override.key_or_group
        for config in self.configs():
            if self.repository.group_exists(key):
                return
            if self.has(config.cfg, key):
                continue
            if not self.taken(key, config):
                raise UserError(self.unknown(key, config))

    def unknown(self, key: str, config: _Config) -> str:
        """unknown key 'epoch'. Did you mean epochs? ..."""
        where = " with " + ", ".join(f"{g}={c}" for g, c in config.choices.items()) if config.choices else ""
        known = [k for k in _dotted(config.cfg) if k != "hydra" and not k.startswith("hydra.")]
        group = key.partition(".")[0]
        known += [f"{group}.{k}" for k in self._free_keys(config, group) or ()]
        elsewhere = self._other_options(key, config)
        close = [] if elsewhere else _closest(key, set(known))
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return (f"unknown key {shown(key)}{where}.{hint}{elsewhere} `imgcls {self.command} --help` lists the "
                "keys (and `--cfg job` their values).")

    def _other_options(self, key: str, config: _Config) -> str:
        """' It is a key of optimizer=rmsprop, sgd.' where the key belongs to other options of its group."""
        from omegaconf import OmegaConf

        group, _, rest = key.partition(".")
        if not rest or not self.repository.group_exists(group):
            return ""
        top = rest.split(".")[0]
        having = sorted(o for o, keys in self._option_keys(group).items() if top in keys)
        chosen = OmegaConf.select(config.cfg, f"hydra.runtime.choices.{group}", default=None)
        if not having or chosen in having:
            return ""
        return f" It is a key of {group}={', '.join(having)}, not of {group}={chosen}."


def _closest(key: str, known: set[str]) -> list[str]:
    """The known keys closest to key: its siblings' names first (model.widht -> model.widths), else whole paths."""
    parent, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    close = difflib.get_close_matches(leaf, sorted(siblings), n=2, cutoff=0.6)
    if close:
        return [siblings[c] for c in close]
    return difflib.get_close_matches(key, sorted(known - {parent}), n=2, cutoff=0.75)


def _augment_keys() -> Iterator[str]:
    """augment.<op> and augment.<op>.<param> of every registered op, and the mixing settings."""
    from imgcls_cli.data.augment import AUGMENTS, MIX_SETTINGS

    yield from MIX_SETTINGS
    for name in AUGMENTS:
        yield name
        for param in inspect.signature(AUGMENTS.get(name)).parameters.values():
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                yield f"{name}.{param.name}"

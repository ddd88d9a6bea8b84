"""The docs are true: every command they show composes, every error they show is the one printed.

README.md and docs/*.md are read as a user reads them:
- every `imgcls ...` line in a code block (bash, sh, console or plain; `\\` continuations joined, `# comments`
  and `...` dropped, `<placeholder>` read as its word, `python -m imgcls_cli` and `torchrun ... -m imgcls_cli`
  read as `imgcls`) runs with `--cfg job` appended: the config composes and every option and key exists. A
  sweep (`-m`) is checked once per value of each swept key (`--cfg job` does not combine with `-m`).
  `imgcls list ...`, `--help` lines and lines that already print a config (`--cfg`) run as they are.
- in a ```console block, `$ imgcls ...` is a command that must fail: its stderr's last line is the `error: ...`
  line shown under it, verbatim, and its exit status 2.
- a ```yaml block whose first line is `# <path>.yaml` is written to that path first (an example config folder).

Starting `imgcls` costs ~3 s a process, so all of them run in ONE child process (conftest.run_in_one_process)
that calls `imgcls_cli.cli.main(argv)` for each, in a scratch folder.
"""
from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import Result, cli_env, run_in_one_process

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONF = ROOT / "conf"
README_COMMANDS = ['pip install -e ".[dev]" && imgcls train', 'pip install -e ".[dev]" && python -m pytest -q']
MAX_README_BYTES = 15_000
# Files the error examples name, in the scratch folder the commands run in.
EXAMPLE_FILES = {"notes.txt": "not a checkpoint: plain text\n"}
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
PLACEHOLDER = re.compile(r"<([A-Za-z][\w -]*)>")
# Hydra's flags that take a value: the token after them is not an override.
VALUE_FLAGS = {"--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "--cfg", "-c",
               "--package", "-p", "--experimental-rerun"}
GROUPS = {p.parent.relative_to(CONF).as_posix() for p in CONF.glob("*/**/*.yaml")}
PRINTS_CONFIG = {"--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help"}


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


# ----------------------------------------------------------------------------------------- reading the docs
@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the first line inside the fence
    language: str
    lines: list[str]


@dataclass
class Check:
    """One command to run: argv after `imgcls`, and what it must do."""

    where: str  # file:line
    argv: list[str]
    expect_error: str | None = None  # the verbatim stderr line, for console examples
    shown: str = ""  # the line as the docs show it
    key: str = field(default="")
    on_runs: bool = False  # `imgcls report <run dir>`: run on real run directories by tests/test_report_cli.py

    def __post_init__(self) -> None:
        self.key = self.key or f"{self.where} imgcls {shlex.join(self.argv)}"


def code_blocks(path: Path) -> list[Block]:
    blocks, current = [], None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if current is None and match:
            current = Block(path, number + 1, match.group(2).lower(), [])
        elif current is not None and line.strip() == "```":
            blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append(line)
    assert current is None, f"{path.name}: a code block opened on line {current.line - 1} is never closed"
    return blocks


def strip_comment(line: str) -> str:
    """The line without a shell comment: a '#' that starts a word, outside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def logical_lines(lines: list[str], first: int) -> list[tuple[int, str]]:
    """(line number, text) with backslash continuations joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", first
    for offset, line in enumerate(lines):
        if not pending:
            start = first + offset
        text = line.rstrip()
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        out.append((start, pending + text))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def imgcls_argv(command: str) -> list[str] | None:
    """The arguments after `imgcls` of one shell command, or None when it does not run imgcls."""
    command = PLACEHOLDER.sub(lambda m: m.group(1).replace(" ", "_"), strip_comment(command))
    if command.split()[:1] not in (["imgcls"], ["python"], ["python3"], ["torchrun"]):
        return None
    tokens = [t for t in shlex.split(command) if t != "..."]
    if tokens[:1] == ["imgcls"]:
        return tokens[1:]
    for i in range(len(tokens) - 1):  # python -m imgcls_cli ..., torchrun ... -m imgcls_cli ...
        if tokens[i] == "-m" and tokens[i + 1] == "imgcls_cli" and tokens[0] in ("python", "python3", "torchrun"):
            return tokens[i + 2:]
    return None


def checks_of(block: Block) -> list[Check]:
    where = f"{block.path.relative_to(ROOT)}:{{}}"
    checks: list[Check] = []
    if block.language == "console":
        lines = logical_lines(block.lines, block.line)
        for i, (number, text) in enumerate(lines):
            if not text.startswith("$ "):
                continue
            argv = imgcls_argv(text[2:])
            assert argv is not None, f"{where.format(number)}: a console block shows imgcls commands only: {text}"
            output = [t for _, t in lines[i + 1:i + 2] if not t.startswith("$ ")]
            assert output and output[0].startswith("error: "), (
                f"{where.format(number)}: a console block shows a command and the error line it prints under it")
            checks.append(Check(where.format(number), argv, expect_error=output[0], shown=text[2:]))
        return checks
    for number, text in logical_lines(block.lines, block.line):
        for part in strip_comment(text).split("&&"):
            if part.strip() and (argv := imgcls_argv(part.strip())) is not None:
                checks += compose_checks(where.format(number), argv, part.strip())
    return checks


def compose_checks(where: str, argv: list[str], shown: str) -> list[Check]:
    """`--cfg job` runs for one documented command line: one per option of each swept config group."""
    if argv[:1] == ["report"]:
        return [Check(where, argv, shown=shown, on_runs=True)]
    if not argv or argv[0] in ("list", "-h", "--help", "help", "-V", "--version") or PRINTS_CONFIG & set(argv):
        return [Check(where, argv, shown=shown)]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    command, rest = argv[0], [a for a in argv[1:] if a not in ("-m", "--multirun")]
    flags, overrides, i = [], [], 0
    while i < len(rest):
        if rest[i].startswith("-"):
            takes_value = rest[i] in VALUE_FLAGS and i + 1 < len(rest)
            flags += rest[i:i + 1 + takes_value]
            i += 1 + takes_value
            continue
        overrides.append(rest[i])
        i += 1
    base, variants = list(overrides), []  # each sweep at its first value; then each other value alone
    for j, text in enumerate(overrides):
        try:
            override = parser.parse_override(text)
        except Exception:  # noqa: BLE001 - Hydra itself reports it when the command runs
            continue
        if not override.is_sweep_override():
            continue
        key = override.get_key_element()
        if override.is_discrete_sweep() and key.lstrip("+~") in GROUPS:  # each option of a group composes
            values = list(override.sweep_string_iterator())
        elif override.is_discrete_sweep():  # any value of a plain key composes as its first does
            values = list(override.sweep_string_iterator())[:1]
        else:  # interval(a,b) for a sweeper: its lower end
            values = [str(override.value().start)]
        base[j] = f"{key}={values[0]}"
        variants += [(j, f"{key}={value}") for value in values[1:]]
    runs = [base] + [[*base[:j], text, *base[j + 1:]] for j, text in variants]
    return [Check(where, [command, *run, *flags, "--cfg", "job"], shown=shown) for run in runs]


def example_files() -> dict[str, str]:
    """The files the docs show as YAML blocks with their path on the first line, and EXAMPLE_FILES."""
    files = dict(EXAMPLE_FILES)
    for path in doc_files():
        for block in code_blocks(path):
            head = block.lines[0].strip() if block.lines else ""
            if block.language in ("yaml", "yml") and (match := re.fullmatch(r"#\s*(\S+\.ya?ml)", head)):
                files[match.group(1)] = "\n".join(block.lines) + "\n"
    return files


def all_checks() -> list[Check]:
    checks = []
    for path in doc_files():
        for block in code_blocks(path):
            if block.language in SHELL_LANGUAGES:
                checks += checks_of(block)
    return checks


# ------------------------------------------------------------------------------------- running the commands
@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Result]:
    """Every check's result, from one child process in a scratch folder holding the example files."""
    work = tmp_path_factory.mktemp("docs_commands")
    for name, text in example_files().items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    checks = [c for c in all_checks() if not c.on_runs]
    argvs = list({json.dumps(c.argv): c.argv for c in checks}.values())
    ran = run_in_one_process({json.dumps(argv): (argv, work) for argv in argvs},
                             env={**cli_env(), "COLUMNS": "200", "NO_COLOR": "1"})
    return {c.key: ran[json.dumps(c.argv)] for c in checks}


def describe(check: Check, result: Result) -> str:
    return (f"{check.where}: {check.shown}\nran: imgcls {shlex.join(check.argv)}\nexit status "
            f"{result.returncode}\n--- stdout ---\n{result.stdout[-2000:]}\n--- stderr ---\n{result.stderr[-3000:]}")


CHECKS = all_checks()


@pytest.mark.parametrize("check", [c for c in CHECKS if c.expect_error is None and not c.on_runs],
                         ids=lambda c: c.key)
def test_every_documented_command_composes(check: Check, results: dict[str, Result]) -> None:
    result = results[check.key]
    assert result.returncode == 0, describe(check, result)
    assert result.stdout.strip(), describe(check, result)
    assert "Traceback" not in result.stderr, describe(check, result)


@pytest.mark.parametrize("check", [c for c in CHECKS if c.expect_error is not None], ids=lambda c: c.key)
def test_every_documented_error_is_printed_verbatim(check: Check, results: dict[str, Result]) -> None:
    result = results[check.key]
    lines = result.stderr_lines
    assert result.returncode == 2, describe(check, result)
    assert lines and lines[-1] == check.expect_error, describe(check, result)
    assert "Traceback" not in result.stderr, describe(check, result)


# ------------------------------------------------------------------------------------------- the docs' shape
def test_the_readme_is_a_short_front_page_with_its_two_commands_and_a_table_of_contents() -> None:
    text = README.read_text()
    assert len(text.encode()) <= MAX_README_BYTES
    blocks = ["\n".join(b.lines) for b in code_blocks(README)]
    for command in README_COMMANDS:  # .ci/run and the packaging tests run exactly these
        assert any(line.split("#")[0].strip() == command for b in blocks for line in b.splitlines()), command
    for page in sorted(DOCS.glob("*.md")):
        assert f"(docs/{page.name})" in text, f"README's table of contents misses docs/{page.name}"
    assert "<!-- benchmarks/run.py" not in text  # the benchmark tables live in docs/benchmarks.md


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_every_link_between_the_pages_reaches_a_page_and_heading() -> None:
    broken = []
    for path in doc_files():
        text = path.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            page = (path.parent / file).resolve() if file else path
            if not page.is_file():
                broken.append(f"{path.name}: {target} (no such file)")
                continue
            if anchor and page.suffix == ".md":
                headings = {_slug(h) for h in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}
                if anchor not in headings:
                    broken.append(f"{path.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_benchmark_tables_have_their_place_in_docs_benchmarks() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run as runner  # benchmarks/run.py
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    page = (DOCS / "benchmarks.md").read_text()
    assert page.count(runner.README_START) == 1 and page.count(runner.README_END) == 1
    new = runner.with_tables(page, ["# Benchmarks on CPU X", "", "## a table", "", "| 1 |"])
    before, after = page.split(runner.README_START)[0], page.split(runner.README_END)[1]
    assert new.startswith(before) and new.endswith(after) and "### Benchmarks on CPU X" in new


def test_every_error_line_shown_in_the_docs_is_checked() -> None:
    """An `error:` line outside a console block (or not under its command) would be checked by nothing."""
    unchecked = []
    for path in doc_files():
        for block in code_blocks(path):
            if block.language == "console":
                continue
            unchecked += [f"{path.name}:{block.line + i}: {line}" for i, line in enumerate(block.lines)
                          if line.lstrip().startswith("error:")]
    assert not unchecked, "show errors in a ```console block under their `$ imgcls ...` line:\n" + "\n".join(unchecked)


def test_the_reader_finds_commands_continuations_sweeps_and_errors() -> None:
    block = Block(ROOT / "docs" / "x.md", 1, "bash", [
        "imgcls train model=resnet epochs=5   # a comment",
        "imgcls train -m seed=0,1,2 \\",
        "    'optimizer=adam,sgd'",
        "imgcls eval checkpoint=outputs/train/<run>/checkpoints/best.pt 'checkpoint=a b.pt'",
        "python -m imgcls_cli train ...   # same as imgcls",
        "torchrun --nproc_per_node=4 -m imgcls_cli train model=resnet18 ...",
        'pip install -e ".[dev]" && imgcls train',
        "pip install torch",
    ])
    argvs = [c.argv for c in checks_of(block)]
    assert argvs[0] == ["train", "model=resnet", "epochs=5", "--cfg", "job"]
    # a sweep: every option of a group, the first value of a plain key
    assert argvs[1:3] == [["train", "seed=0", "optimizer=adam", "--cfg", "job"],
                          ["train", "seed=0", "optimizer=sgd", "--cfg", "job"]]
    assert argvs[3] == ["eval", "checkpoint=outputs/train/run/checkpoints/best.pt", "checkpoint=a b.pt", "--cfg", "job"]
    assert argvs[4:] == [["train", "--cfg", "job"], ["train", "model=resnet18", "--cfg", "job"], ["train", "--cfg", "job"]]
    console = Block(ROOT / "docs" / "x.md", 1, "console", ["$ imgcls train epochs=-1", "error: epochs ...", "$ ls"])
    with pytest.raises(AssertionError, match="imgcls commands only"):
        checks_of(console)
    console.lines = console.lines[:2]
    assert [(c.argv, c.expect_error) for c in checks_of(console)] == [(["train", "epochs=-1"], "error: epochs ...")]


def test_the_docs_show_enough_commands_and_errors_to_be_worth_checking() -> None:
    compose = [c for c in CHECKS if c.expect_error is None]
    errors = [c for c in CHECKS if c.expect_error is not None]
    # errors: enough to show each kind of mistake; at most 40, since each one runs the CLI (in one child process)
    assert len(compose) >= 60 and 8 <= len(errors) <= 40, (len(compose), len(errors))
    commands = {c.argv[0] for c in compose if c.argv}
    assert {"train", "eval", "predict", "export", "explain", "list"} <= commands


# ----------------------------------------------------------------------------------- the configuration page
def _leaf_keys(tree: dict, prefix: str = "") -> list[str]:
    """Dotted paths of a config's values (not of the mappings that hold them)."""
    keys = []
    for key, value in tree.items():
        keys += _leaf_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys


def _sections(text: str) -> dict[str, str]:
    """The `## ` sections of a page by heading (backticks dropped)."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {heading.replace("`", "").strip(): body for heading, body in zip(parts[1::2], parts[2::2])}


def _documented(section: str) -> set[str]:
    """What a section names in backticks: `key`, `key=value` (as the key) and `option`."""
    return {name.split("=", 1)[0] for name in re.findall(r"`([^`\s]+)`", section)}


def test_the_configuration_reference_names_every_option_and_key_of_conf() -> None:
    sections = _sections((DOCS / "configuration.md").read_text())
    missing = []
    groups = sorted(GROUPS - {"hydra/help", "hydra/job_logging"})
    for group in groups:
        assert group in sections, f"configuration.md has no '## {group}' section"
        named = _documented(sections[group])
        package_global = group in ("experiment", "hparams_search")  # `# @package _global_`: keys of other groups
        prefix = "" if package_global else f"{group.replace('/', '.')}."
        for option in sorted((CONF / group).glob("*.yaml")):
            if option.stem not in named:
                missing.append(f"{group}={option.stem}")
            if group == "experiment":
                continue
            config = yaml.safe_load(option.read_text()) or {}
            config = {k: v for k, v in config.items() if k != "defaults" and not (k == "name" and v == option.stem)}
            for key in _leaf_keys(config):
                if f"{prefix}{key}" not in named:
                    missing.append(f"{group}={option.stem}: {prefix}{key}")
    for command in ("train", "eval", "predict", "export", "explain", "lr_find", "check"):
        config = yaml.safe_load((CONF / f"{command}.yaml").read_text())
        named = _documented(sections[f"imgcls {command} keys"])
        leaves = _leaf_keys({k: v for k, v in config.items() if k not in ("defaults", "hydra")})
        missing += [f"imgcls {command}: {key}" for key in leaves if key not in named]
    assert not missing, "docs/configuration.md does not name:\n" + "\n".join(missing)



def test_the_config_groups_table_names_every_option_and_marks_the_defaults() -> None:
    section = _sections((DOCS / "configuration.md").read_text())["Config groups"]
    rows = {cells[0]: cells[1] for line in section.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    defaults = {}
    for entry in yaml.safe_load((CONF / "train.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            defaults.update({k: v for k, v in entry.items() if not k.startswith("override ") and v})
    missing = []
    for group in sorted(GROUPS - {"hydra/help", "hydra/job_logging"}):
        row = rows.get(group, "")
        missing += [f"{group}: {option.stem}" for option in sorted((CONF / group).glob("*.yaml"))
                    if f"`{option.stem}`" not in row]
        if group in defaults and f"`{defaults[group]}` (default)" not in row:
            missing.append(f"{group}: `{defaults[group]}` (default)")
    assert not missing, "the config groups table of docs/configuration.md misses:\n" + "\n".join(missing)


def _all_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys.add(f"{prefix}{key}")
        if isinstance(value, dict):
            keys |= _all_keys(value, f"{prefix}{key}.")
    return keys


def test_every_key_the_configuration_reference_lists_exists_in_conf() -> None:
    """The other way round: a key removed or renamed in conf/ leaves no stale row behind."""
    sections = _sections((DOCS / "configuration.md").read_text())
    stale = []
    for heading, body in sections.items():
        if heading.startswith("imgcls "):
            config = yaml.safe_load((CONF / f"{heading.split()[1]}.yaml").read_text())
            known = _all_keys({k: v for k, v in config.items() if k not in ("defaults", "hydra")})
        elif heading in GROUPS and heading not in ("experiment",):
            package_global = heading == "hparams_search"
            prefix = "" if package_global else f"{heading.replace('/', '.')}."
            known = set()
            for option in (CONF / heading).glob("*.yaml"):
                known |= {prefix + k for k in _all_keys(yaml.safe_load(option.read_text()) or {})}
            if heading == "dataset":  # the keys every dataset takes live in train.yaml
                known |= _all_keys(yaml.safe_load((CONF / "train.yaml").read_text()))
        else:
            continue
        rows = re.findall(r"^\| `([^`]+)` \|", body, re.M)
        stale += [f"{heading}: {key}" for key in rows if "=" not in key and key not in known
                  and key.split(".")[-1] not in {p.stem for p in (CONF / heading).glob("*.yaml")}]
    assert not stale, "docs/configuration.md lists keys conf/ does not have:\n" + "\n".join(stale)


def test_the_models_page_has_a_row_for_every_model_option() -> None:
    text = (DOCS / "models.md").read_text()
    rows = set(re.findall(r"^\| ([\w.]+) \|", text, re.M))
    assert {p.stem for p in (CONF / "model").glob("*.yaml")} <= rows


def test_the_install_page_installs_the_cpu_build_of_torch_before_the_package() -> None:
    """Without a GPU, torch and torchvision come from PyTorch's CPU index first; then pip keeps them."""
    lines = [strip_comment(line).strip() for block in code_blocks(DOCS / "install.md") for line in block.lines]
    cpu = [i for i, line in enumerate(lines) if line.startswith("pip install torch torchvision")
           and "--index-url https://download.pytorch.org/whl/cpu" in line]
    package = [i for i, line in enumerate(lines) if line == 'pip install -e ".[dev]"']
    assert cpu and package and cpu[0] < package[-1]
    assert "(docs/install.md)" in README.read_text()


def _value(tree: object, dotted: str) -> object:
    """tree's value at a dotted path (a key may hold dots itself, as the sweeper's params do); KeyError if none."""
    if isinstance(tree, dict) and dotted in tree:
        return tree[dotted]
    head, _, rest = dotted.partition(".")
    if not rest or not isinstance(tree, dict) or head not in tree:
        return KeyError
    return _value(tree[head], rest)


def _same(shown: str, value: object) -> bool:
    try:
        return yaml.safe_load(shown) == value or shown == str(value)
    except yaml.YAMLError:
        return shown == str(value)


def test_the_defaults_the_configuration_reference_shows_are_those_of_conf() -> None:
    sections = _sections((DOCS / "configuration.md").read_text())
    wrong = []
    for command in ("train", "eval", "predict", "export", "explain", "lr_find", "check"):
        config = yaml.safe_load((CONF / f"{command}.yaml").read_text())
        for key, shown in re.findall(r"^\| `([^`]+)` \| `([^`]*)` \|", sections[f"imgcls {command} keys"], re.M):
            if not _same(shown, _value(config, key)):
                wrong.append(f"imgcls {command}: {key} shows {shown}, conf has {_value(config, key)!r}")
    for group in sorted(GROUPS - {"hydra/help", "hydra/job_logging", "experiment"}):
        prefix = "" if group == "hparams_search" else f"{group.replace('/', '.')}."
        for option, keys in re.findall(r"^\| `([\w.-]+)` \|[^\n]*\| ([^\n]*) \|$", sections.get(group, ""), re.M):
            path = CONF / group / f"{option}.yaml"
            if not path.is_file():
                continue
            config = yaml.safe_load(path.read_text()) or {}
            for key, shown in re.findall(r"`([^`=]+)=([^`]*)`", keys):
                if not _same(shown, _value(config, key.removeprefix(prefix))):
                    wrong.append(f"{group}={option}: {key} shows {shown}, conf has {_value(config, key.removeprefix(prefix))!r}")
    assert not wrong, "docs/configuration.md shows defaults conf/ does not have:\n" + "\n".join(wrong)

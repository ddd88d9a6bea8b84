"""Every benchmark of the project in one run: medians of repeats, one JSON and one markdown file per machine.

    python benchmarks/run.py [--quick] [--repeats 3] [--only NAME ...] [--readme] [--render]

Each benchmark script runs `--repeats` times (1 with --quick, which also makes each one small); the markdown
table it prints is read back and every numeric cell becomes the median over the repeats. Ratios against a
baseline are cells of a script's own table, so each is measured in the same run as its baseline, and the median
of those ratios is reported. Writes benchmarks/results/<machine>.json (the medians and every repeat's table) and
benchmarks/results/<machine>.md, and prints the markdown; --readme also writes it into docs/benchmarks.md, between
its markers; --only keeps the results already on file for the other benchmarks; --render runs nothing.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import cpu_name  # noqa: E402

# name: (script and its arguments, the --quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "time to accuracy: digits_fast": (["default_run.py", "--seeds", "0", "1", "2", "3", "4", "--extra",
                                       "+experiment=digits_fast"],
                                      ["default_run.py", "--seeds", "0", "--extra", "+experiment=digits_fast"]),
    "time to accuracy: fashion_mnist_fast": (["default_run.py", "--seeds", "0", "--extra",
                                              "+experiment=fashion_mnist_fast"],
                                             ["default_run.py", "--seeds", "0", "--extra",
                                              "+experiment=fashion_mnist_fast", "epochs=1",
                                              "dataset.max_train_samples=5000"]),
    "default run": (["default_run.py", "--seeds", "0"], ["default_run.py", "--seeds", "0", "--extra", "epochs=2"]),
    "train throughput": (["train_throughput.py"], ["train_throughput.py", "--images", "2000", "--epochs", "1"]),
    "eval and predict": (["eval_predict.py"], ["eval_predict.py", "--images", "2000", "--repeats", "1"]),
    "data pipeline": (["data_pipeline.py"], ["data_pipeline.py", "--images", "600", "--epochs", "1"]),
    "models": (["models.py", "--models", "simple_cnn", "lenet5", "resnet9", "resnet18", "densenet_bc_100"],
               ["models.py", "--models", "simple_cnn", "lenet5", "--steps", "1", "--formats", "fp32,channels_last"]),
    "cost growth": (["cost_growth.py"], ["cost_growth.py", "--sizes", "1000", "--pixels", "28,64", "--steps", "5"]),
    "data-parallel": (["distributed.py"], ["distributed.py", "--seeds", "0", "--extra", "epochs=2"]),
    "export": (["export.py", "--reuse"],
               ["export.py", "--models", "simple_cnn", "--speed-dataset", "digits", "--accuracy", "digits", "--extra",
                "epochs=1", "dataset.max_train_samples=300", "--calibration-samples", "32", "--seconds", "0.05",
                "--passes", "1", "--calls", "20", "--rounds", "2"]),
}
README_START, README_END = "<!-- benchmarks/run.py: start -->", "<!-- benchmarks/run.py: end -->"
NUMBER = re.compile(r"^\s*\**([-+]?\d[\d,]*\.?\d*)(x|×|%| s)?\**\s*$")


def markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the first markdown table in a script's output."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    cells = [row for row in cells if not all(set(c) <= set("-: ") for c in row)]  # the |---| separator
    if not cells:
        return [], []
    return cells[0], cells[1:]


def median_cells(tables: list[list[list[str]]]) -> list[list[str]]:
    """Cell-wise medians of tables of the same shape: a cell that is a number in every table becomes the median
    (with its unit kept); any other cell is the text most of the tables have (the first table's on a tie), so that
    a goal's "met" follows its median ratio over an odd number of repeats."""
    first = tables[0]
    out = []
    for r, row in enumerate(first):
        new_row = []
        for c, cell in enumerate(row):
            found = [NUMBER.match(t[r][c]) if r < len(t) and c < len(t[r]) else None for t in tables]
            if all(found):
                values = [float(m.group(1).replace(",", "")) for m in found]
                decimals = len(found[0].group(1).split(".")[1]) if "." in found[0].group(1) else 0
                cell = f"{statistics.median(values):,.{decimals}f}" + (found[0].group(2) or "")
            else:
                cell = Counter(t[r][c] for t in tables if r < len(t) and c < len(t[r])).most_common(1)[0][0]
            new_row.append(cell)
        out.append(new_row)
    return out


def run_script(args: list[str]) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], capture_output=True, text=True,
                          cwd=HERE.parent)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout, time.perf_counter() - start


def section(name: str, result: dict) -> list[str]:
    """One benchmark's markdown: its command, the line it printed above its table, the table of medians."""
    if "error" in result:
        return [f"## {name}", "", f"failed: {result['error']}", ""]
    first = result["repeats"][0]["output"].strip()
    context = first.splitlines()[0] if first else ""
    header = result["header"]
    runs = result.get("repeats_run", len(result["repeats"]))
    kind = "median of {} repeats".format(runs) if runs > 1 else "one run"
    return [f"## {name}", "", f"`python benchmarks/{' '.join(result['command'])}` ({kind}): {context}", "",
            "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |",
            *("| " + " | ".join(row) + " |" for row in result["median"]), ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small versions, one repeat each")
    parser.add_argument("--repeats", type=int, help="repeats per benchmark (default 3, or 1 with --quick)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS),
                        help="run these benchmarks only; the others' results already on file are kept")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--readme", action="store_true",
                        help=f"also put the tables into docs/benchmarks.md, between {README_START} and {README_END}")
    parser.add_argument("--render", action="store_true", help="run nothing: write the .md (and README) from the .json")
    parser.add_argument("--machine", help="the machine whose results to use (default: this one's CPU), as named in "
                                          "the first line of its .md; for --render on another machine")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    machine = args.machine or cpu_name()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", machine).strip("-").lower() + ("-quick" if args.quick else "")
    json_file = args.out / f"{slug}.json"
    results: dict[str, dict] = {}
    if (args.only or args.render) and json_file.is_file():
        results = json.loads(json_file.read_text())["benchmarks"]
    for name, (full, quick) in BENCHMARKS.items():
        if args.render or (args.only and name not in args.only):
            continue
        command = quick if args.quick else full
        outputs, seconds = [], 0.0
        try:
            for _ in range(repeats):
                text, took = run_script(command)
                outputs.append(text)
                seconds += took
        except RuntimeError as exc:
            results[name] = {"command": command, "error": str(exc)}
            print(f"{name}: {exc}", file=sys.stderr)
            continue
        tables = [markdown_table(text) for text in outputs]
        results[name] = {"command": command, "header": tables[0][0],
                         "median": median_cells([rows for _, rows in tables]), "seconds": round(seconds, 1),
                         "date": datetime.date.today().isoformat(), "repeats_run": repeats,
                         "repeats": [{"rows": rows_i, "output": text} for (_, rows_i), text in zip(tables, outputs)]}
        print(f"{name}: done in {seconds:.0f} s", file=sys.stderr, flush=True)
    dates = sorted({r["date"] for r in results.values() if "date" in r})  # the first runs recorded none
    report = [f"# Benchmarks on {machine}", "",
              f"{' to '.join(dict.fromkeys([dates[0], dates[-1]])) if dates else ''}, {'quick, ' if args.quick else ''}"
              "each table the median of the repeats named beside its command.", ""]
    for name in BENCHMARKS:
        if name in results:
            report += section(name, results[name])
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.render:
        json_file.write_text(json.dumps({"machine": machine, "date": datetime.date.today().isoformat(),
                                         "quick": args.quick, "repeats": repeats, "benchmarks": results}, indent=2))
    (args.out / f"{slug}.md").write_text("\n".join(report))
    if args.readme:
        readme = HERE.parent / "docs" / "benchmarks.md"
        readme.write_text(with_tables(readme.read_text(), report))
    print("\n".join(report))


def with_tables(readme: str, report: list[str]) -> str:
    """README text whose part between the two markers is the report, its headings two levels down."""
    start, end = readme.index(README_START) + len(README_START), readme.index(README_END)
    body = [("##" + line if line.startswith("#") else line) for line in report]
    return readme[:start] + "\n" + "\n".join(body).strip() + "\n" + readme[end:]


if __name__ == "__main__":
    main()

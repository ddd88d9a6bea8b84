"""benchmarks/run.py: the tables it reads back from each benchmark and the medians it reports."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_runner():
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("benchmark_runner", BENCHMARKS / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_runner_reads_each_table_and_reports_cell_wise_medians():
    runner = load_runner()
    outputs = [f"machine line\n\n| loop | images/s | vs (c) |\n| --- | ---: | --- |\n| imgcls | {a} | {r}x |\n"
               f"| plain | {b} | 1.0x |\n" for a, b, r in (("1,200", "400", "3.0"), ("900", "450", "2.00"),
                                                         ("1,000", "500", "2.5"))]
    tables = [runner.markdown_table(text) for text in outputs]
    assert tables[0][0] == ["loop", "images/s", "vs (c)"]
    assert tables[0][1] == [["imgcls", "1,200", "3.0x"], ["plain", "400", "1.0x"]]
    medians = runner.median_cells([rows for _, rows in tables])
    # the median ratio is the median of the ratios measured in each run, not a ratio of medians
    assert medians == [["imgcls", "1,000", "2.5x"], ["plain", "450", "1.0x"]]


def test_every_benchmark_the_runner_names_exists():
    runner = load_runner()
    for name, (full, quick) in runner.BENCHMARKS.items():
        assert (BENCHMARKS / full[0]).is_file() and (BENCHMARKS / quick[0]).is_file(), name
    scripts = {p.name for p in BENCHMARKS.glob("*.py")} - {"run.py", "machine.py"}
    covered = {full[0] for full, _ in runner.BENCHMARKS.values()}
    # the measurements behind single docs sections (CPU formats, transfer, domain adaptation, the GPU path) run on
    # their own, and so does the bitwise baseline (a check of results, not a speed)
    assert scripts - covered <= {"cpu_formats.py", "transfer.py", "domain.py", "gpu.py", "bitwise_baseline.py"}


def test_the_readme_gets_the_tables_between_its_markers_and_nothing_else_changes():
    runner = load_runner()
    readme = f"# imgcls\n\n## Results\n{runner.README_START}\nold table\n{runner.README_END}\n\nbelow\n"
    report = ["# Benchmarks on CPU X", "", "2026-11-25, median of 3 repeat(s) per cell.", "", "## models", "",
              "| a | b |", "| --- | --- |", "| 1 | 2 |"]
    new = runner.with_tables(readme, report)
    assert new.startswith(f"# imgcls\n\n## Results\n{runner.README_START}\n### Benchmarks on CPU X\n")
    assert "#### models" in new and "| 1 | 2 |" in new and "old table" not in new
    assert new.endswith(f"| 1 | 2 |\n{runner.README_END}\n\nbelow\n")
    assert runner.with_tables(new, report) == new  # rendering again changes nothing

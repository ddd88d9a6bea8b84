"""benchmarks/run.py: the tables it reads back from each benchmark and the medians it reports."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

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
    # the measurements behind single docs sections (CPU formats, transfer, domain adaptation, multi-label, the GPU path) run on
    # their own, and so does the bitwise baseline (a check of results, not a speed)
    assert scripts - covered <= {"cpu_formats.py", "transfer.py", "domain.py", "gpu.py", "bitwise_baseline.py",
                                  "check.py", "multilabel.py"}


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


def test_a_text_cell_is_what_most_repeats_say_so_a_verdict_follows_its_median_ratio():
    runner = load_runner()
    tables = [[["simple_cnn", f"{ratio}x", verdict]] for ratio, verdict in
              (("0.40", "met"), ("0.60", "not met"), ("0.55", "not met"))]
    assert runner.median_cells(tables) == [["simple_cnn", "0.55x", "not met"]]
    assert runner.median_cells(tables[:2]) == [["simple_cnn", "0.50x", "met"]]  # a tie: the first repeat's


def load_export_benchmark():
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("benchmark_export", BENCHMARKS / "export.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_export_benchmark_quick_prints_speeds_accuracies_and_goals_in_one_table(capsys):
    """The runner's --quick arguments, in this process (one short digits training, its export, then the table)."""
    pytest.importorskip("onnxruntime")
    import torch

    runner, bench = load_runner(), load_export_benchmark()
    threads = torch.get_num_threads()
    try:
        bench.main(runner.BENCHMARKS["export"][1][1:])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert "intra_op_num_threads=" in first and "set_num_threads(" in first and "simple_cnn: 1x32x32 digits" in first
    header, rows = runner.markdown_table(out)
    assert header == ["model", "measure", "PyTorch eager (eval)", "ONNX Runtime fp32", "ONNX Runtime int8",
                      ".pt2 (torch.export)", "goal", "met"]
    by_measure = {row[1]: row for row in rows}
    number = lambda cell: float(runner.NUMBER.match(cell).group(1).replace(",", ""))  # noqa: E731
    rates, p50, p99 = (by_measure[m][2:6] for m in ("images/s, batch 64", "latency p50 ms, batch 1",
                                                    "latency p99 ms, batch 1"))
    assert all(number(r) > 0 for r in rates) and all(number(a) <= number(b) for a, b in zip(p50, p99))
    ratios = by_measure["p50 ÷ eager p50"]
    onnx_ratio = number(p50[1]) / number(p50[0])
    assert ratios[2] == "1.00x" and abs(number(ratios[3]) - onnx_ratio) <= 0.006 + 0.01 * onnx_ratio
    assert ratios[7] == ("met" if number(ratios[3]) <= 0.5 else "not met")
    speedup = by_measure["images/s ÷ ONNX Runtime fp32"]
    assert speedup[7] == ("met" if number(speedup[4]) >= 1.5 else "not met")
    accuracy = next(row for row in rows if row[1].startswith("test accuracy"))
    assert accuracy[0].startswith("digits") and accuracy[1] == "test accuracy (359 images)"
    fp32, int8, program = number(accuracy[3]), number(accuracy[4]), number(accuracy[5])
    assert 0 < int8 <= 1 and abs(fp32 - program) <= 1 / 359 + 1e-9  # the two fp32 exports score alike
    loss = by_measure["int8 accuracy loss, points"]
    assert abs(number(loss[4]) - (fp32 - int8) * 100) < 0.006
    assert loss[7] == ("met" if number(loss[4]) <= 0.5 else "not met")


def test_each_section_says_how_many_repeats_its_medians_are_of():
    runner = load_runner()
    output = "context line\n\n| a | b |\n| --- | --- |\n| x | 1.0 |\n"
    result = {"command": ["export.py"], "header": ["a", "b"], "median": [["x", "1.0"]],
              "repeats": [{"rows": [["x", "1.0"]], "output": output}]}
    assert "`python benchmarks/export.py` (one run): context line" in runner.section("export", result)
    three = {**result, "repeats_run": 3, "repeats": result["repeats"] * 3}
    assert "`python benchmarks/export.py` (median of 3 repeats): context line" in runner.section("export", three)

"""report.html built in-process from eval directories written by the real eval writer: its size for 10,000 test
images, the caps on thumbnails, escaping of user input, explanations, image files read again (and gone), and a
report that cannot be written costing one warning line and nothing else. The browser opens these pages in
tests/test_report_browser.py; the CLI writes them in tests/test_report_cli.py."""
from __future__ import annotations

import html
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from reportkit import (HOSTILE_CLASSES, jpeg_shape, page_data, read_predictions, ten_thousand_images, write_eval_dir,
                       write_explanations)

from imgcls_cli import metrics as M
from imgcls_cli.report.gallery import build_gallery
from imgcls_cli.report.page import write_report_safely, write_run_report
from imgcls_cli.report.rebuild import report_command
from imgcls_cli.report.rundata import Evaluation, Prediction
from imgcls_cli.report.thumbs import CELL_CAP, MAX_THUMBNAILS, THUMB_SIZE, SplitImages, cell_cap

MAX_BYTES = 10_000_000


def test_ten_thousand_test_images_make_a_page_under_ten_megabytes(tmp_path):
    images, labels, classes, source = ten_thousand_images()
    folder = write_eval_dir(tmp_path / "eval", labels, classes)
    start = time.perf_counter()
    path = write_run_report(folder, SplitImages([str(i) for i in range(len(labels))], images))
    seconds = time.perf_counter() - start
    size = path.stat().st_size
    print(f"report.html of {len(labels)} images ({source}): {size / 1e6:.2f} MB in {seconds:.2f} s")
    assert size <= MAX_BYTES, f"{size / 1e6:.1f} MB for 10,000 images"
    data = page_data(path.read_text(encoding="utf-8"))
    assert data["cap"] == CELL_CAP  # 10 classes: every cell shows its first 24
    assert sum(cell["n"] for cell in data["cells"].values()) == len(labels)
    predictions = read_predictions(folder)
    for key, cell in data["cells"].items():
        t, p = map(int, key.split(","))
        assert len(cell["items"]) == min(cell["n"], CELL_CAP)
        for src, _, sample, _ in cell["items"]:
            row = predictions[sample]
            assert (row["target"], row["label"]) == (classes[t], classes[p])
            assert src and max(jpeg_shape(src)[:2]) <= THUMB_SIZE
    assert "capped" in html.unescape(path.read_text(encoding="utf-8"))  # the page says so


def _many(classes: int, n: int, seed: int = 0) -> Evaluation:
    """Predictions over many classes, about 70% right."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, n)
    labels = np.where(rng.random(n) < 0.7, targets, rng.integers(0, classes, n))
    return Evaluation(Path("."), {}, [f"class {c}" for c in range(classes)], [], "index",
                      [Prediction(str(i), int(t), int(p), float(rng.random())) for i, (t, p) in
                       enumerate(zip(targets, labels))])


def test_with_many_classes_the_cap_shrinks_and_the_largest_cells_keep_their_thumbnails():
    gallery = build_gallery(_many(100, 10_000), None, {})
    cells = list(gallery.cells.values())
    assert len(cells) > MAX_THUMBNAILS // CELL_CAP and 1 <= gallery.cap < CELL_CAP
    assert sum(len(c["items"]) for c in cells) == MAX_THUMBNAILS  # the budget, all of it
    short = [c["n"] for c in cells if len(c["items"]) < min(c["n"], gallery.cap)]
    assert all(len(c["items"]) == min(c["n"], gallery.cap) for c in cells if c["n"] > max(short, default=0))
    assert cell_cap([5, 30, 0]) == CELL_CAP and cell_cap([100] * 200, budget=1000) == 5
    assert cell_cap([1] * 5000) == 1  # never 0: the largest cells show one each


def test_a_matrix_too_large_to_draw_is_listed_by_its_largest_cells():
    from imgcls_cli.report.gallery import MAX_LISTED_CELLS
    from imgcls_cli.report.page import run_page
    from imgcls_cli.report.rundata import RunRecord

    ev = _many(1000, 30_000)
    text = run_page(RunRecord(Path("run"), "eval", {}, {}, "", [], ev, []), None)
    data = page_data(text)
    assert len(data["cells"]) == MAX_LISTED_CELLS and 'class="cm listed"' in text
    counts = sorted((c["n"] for c in data["cells"].values()), reverse=True)
    assert counts[0] >= 15 and len(text) < 1_000_000  # not a million cells


def test_a_cell_shows_errors_most_confident_first_and_right_answers_least_confident_first():
    preds = [Prediction("a", 0, 1, 0.4), Prediction("b", 0, 1, 0.9), Prediction("c", 0, 0, 0.99),
             Prediction("d", 0, 0, 0.5), Prediction("e", 0, 0, 0.7)]
    ev = Evaluation(Path("."), {}, ["x", "y"], [], "index", preds)
    cells = build_gallery(ev, None, {"e": [0]}).cells
    assert [item[2] for item in cells["0,1"]["items"]] == ["b", "a"]
    assert [item[2] for item in cells["0,0"]["items"]] == ["e", "d", "c"]  # an explained image first
    assert cells["0,0"]["items"][0][3] == [0]


def test_user_input_is_escaped_and_cannot_leave_the_data_block(tmp_path):
    labels = np.arange(60) % len(HOSTILE_CLASSES)
    ids = [f"<b>{i}</b>" for i in range(60)]
    folder = write_eval_dir(tmp_path / "eval", labels, HOSTILE_CLASSES, ids=ids)
    (folder / "skipped_files.txt").write_text("<script>alert('file')</script>.png\tnot an image\n")
    images = np.random.default_rng(0).integers(0, 255, (60, 3, 20, 30), dtype=np.uint8)
    text = write_run_report(folder, SplitImages(ids, images)).read_text(encoding="utf-8")
    for raw in ("<script>alert", "<img src=x", "<b>bold</b>", "</script>.pt", "<b>1</b>"):
        assert raw not in text
    assert text.count("</script>") == 2  # the data block's and the script's own
    assert "default-src 'none'" in text  # nothing may be loaded, whatever slipped through
    data = page_data(text)
    assert data["classes"] == HOSTILE_CLASSES  # the names themselves, back through JSON
    assert {item[2] for cell in data["cells"].values() for item in cell["items"]} <= set(ids)
    assert html.escape(HOSTILE_CLASSES[1]) in text and html.escape("<script>alert('file')</script>.png") in text


def test_the_calibration_diagram_counts_what_predictions_csv_holds():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), 500)
    targets = rng.integers(0, 4, 500)
    got = M.confidence_bins(probs.max(1), probs.argmax(1) == targets)
    for a, b in zip(got, M.calibration_bins(probs, targets)):
        np.testing.assert_allclose(a, b)


def test_explanations_are_shown_with_their_cell_and_their_overlays_stay_inside_explain(tmp_path):
    images, labels, classes, _ = ten_thousand_images()
    images, labels = images[:300], labels[:300]
    folder = write_eval_dir(tmp_path / "eval", labels, classes)
    (tmp_path / "outside.png").write_bytes((folder / "confusion_matrix.png").read_bytes())
    write_explanations(folder, ["3", "7", "11"], images[[3, 7, 11]], extra_rows=[
        {"key": "5", "kind": "gradcam", "overlay": "../../outside.png"},
        {"key": "6", "kind": "gradcam", "overlay": str(tmp_path / "outside.png")}])
    text = write_run_report(folder, SplitImages([str(i) for i in range(300)], images)).read_text(encoding="utf-8")
    data = page_data(text)
    found = data["explanations"]
    assert [e["key"] for e in found] == ["3", "7", "11", "5", "6"]
    assert all(e["src"] for e in found[:3]) and not any(e["src"] for e in found[3:])  # no way out of explain/
    assert "2 overlay file(s) could not be read" in text
    predictions = read_predictions(folder)
    for i, e in enumerate(found[:3]):
        t, p = classes.index(predictions[e["key"]]["target"]), classes.index(predictions[e["key"]]["label"])
        assert e["cell"] == [t, p]
        first = data["cells"][f"{t},{p}"]["items"][0]
        assert first[2] == e["key"] and i in first[3]  # shown first in its cell, with its overlay


def _path_eval(tmp_path: Path) -> tuple[Path, Path]:
    """An eval directory over image files (predictions keyed by path, relative to the dataset's root)."""
    from conftest import write_png

    images, labels, classes, _ = ten_thousand_images()
    root = tmp_path / "images"
    ids = [f"{classes[int(y)].replace('/', '-')}/{i}.png" for i, y in enumerate(labels[:80])]
    for key, image in zip(ids, images[:80]):
        write_png(root / key, image)
    info = {"dataset_config": {"name": "imagefolder", "root": str(root)}, "seed": 0}
    return write_eval_dir(tmp_path / "eval", labels[:80], classes, ids, "path", info), root


def test_imgcls_report_reads_image_files_again_and_says_when_they_are_gone(tmp_path, capsys):
    import shutil

    folder, root = _path_eval(tmp_path)
    assert report_command([str(folder)]) == 0
    assert capsys.readouterr().out.strip() == f"Report: {folder / 'report.html'}"
    data = page_data((folder / "report.html").read_text(encoding="utf-8"))
    items = [item for cell in data["cells"].values() for item in cell["items"]]
    assert len(items) == 80 and all(item[0] for item in items)
    shutil.rmtree(root)
    assert report_command([str(folder)]) == 0
    text = (folder / "report.html").read_text(encoding="utf-8")
    assert not any(item[0] for cell in page_data(text)["cells"].values() for item in cell["items"])
    assert "Thumbnails: none, the images could not be read" in text
    assert sum(cell["n"] for cell in page_data(text)["cells"].values()) == 80  # the counts stay


def _one_warning(caplog, folder: Path) -> None:
    log = logging.getLogger("imgcls.test_report")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="imgcls.test_report"):
        assert write_report_safely(folder, None, log) is None
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert caplog.records[0].getMessage().startswith("report.html could not be written: ")
    assert "\n" not in caplog.records[0].getMessage()


def test_a_report_that_cannot_be_written_is_one_warning_and_the_run_keeps_its_files(tmp_path, caplog):
    labels = np.arange(40) % 4
    folder = write_eval_dir(tmp_path / "eval", labels, ["a", "b", "c", "d"])
    assert write_report_safely(folder, None, logging.getLogger("imgcls.test_report")) == folder / "report.html"
    (folder / "predictions.csv").write_bytes(b"\xff\xfe\x00garbage")  # not UTF-8: the page cannot be built
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    _one_warning(caplog, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the previous page whole, no temp file

    other = write_eval_dir(tmp_path / "other", labels, ["a", "b", "c", "d"])
    (other / "report.html").mkdir()  # a folder where the page goes
    _one_warning(caplog, other)
    assert not [p for p in other.iterdir() if p.name.endswith(".tmp")]


def test_a_path_that_is_no_run_is_refused_in_one_line(tmp_path):
    from imgcls_cli.errors import UserError

    (tmp_path / "notes.txt").write_text("hello\n")
    for path, words in ((tmp_path / "notes.txt", "is not a run or sweep directory"),
                        (tmp_path, "is not a run or sweep directory"), (tmp_path / "gone", "does not exist")):
        with pytest.raises(UserError, match=words) as exc:
            report_command([str(path)])
        assert "\n" not in str(exc.value)


def test_curves_mark_the_best_epoch_and_leave_gaps_where_validation_did_not_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy\n"
                                     "1,0.1,2.0,0.3,1.8,0.4\n2,0.05,1.5,0.5,,\n3,0.01,1.0,0.7,1.2,0.8\n"
                                     "4,0.005,0.9,0.75,1.3,0.78\n")
    (run / "summary.json").write_text(json.dumps({"status": "interrupted", "best_epoch": 3, "error": "<stopped>"}))
    (run / "config.yaml").write_text("model:\n  name: lenet5\ndataset:\n  name: digits\nepochs: 10\n")
    text = write_run_report(run).read_text(encoding="utf-8")
    assert "lenet5 on digits" in text and "best epoch 3" in text and "4 of 10" in text
    assert "interrupted" in text and "error: &lt;stopped&gt;" in text
    assert "No test evaluation in this run" in text  # no eval/ folder yet
    # val loss and val accuracy: two lines each, around epoch 2 (no value)
    assert text.count('<polyline fill="none" stroke="#ff7f0e"') == 4


def test_the_calibration_chart_draws_accuracy_and_confidence_as_different_marks():
    from imgcls_cli.report.svg import reliability_diagram

    chart = reliability_diagram([0, 4, 6], [0.0, 0.5, 0.9], [0.0, 0.3, 0.95], 0.1)
    # one bar (accuracy) and one diamond (mean confidence) per non-empty bin, plus one of each in the legend
    assert chart.count('class="bar"') == 2 + 1 and chart.count('class="confidence"') == 2 + 1
    assert "accuracy in the bin" in chart and "mean confidence" in chart


def test_small_axis_ticks_are_short_enough_to_clear_the_axis_title():
    from imgcls_cli.report.svg import _label

    assert [_label(v) for v in (0.00075, 0.001, 0.5, 12)] == ["7.5e-4", "1e-3", "0.5", "12"]

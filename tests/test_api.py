"""The Python API: load_model(...).predict equals `imgcls predict`'s predictions.csv for files, numpy arrays and PIL
images; train() and evaluate() run the commands in this process and return their summaries; a mistake raises
UserError with the CLI's one line; `import imgcls_cli` loads no torch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import imgcls_cli
from conftest import TINY_SETTINGS_NO_EPOCHS, assert_ok, read_csv, read_json, run_cli, write_png

QUICK = [*TINY_SETTINGS_NO_EPOCHS, "epochs=1", "dataset.num_samples=200"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six PNGs (3-channel and gray, other sizes than the model's) and one file that is no image."""
    folder = tmp_path_factory.mktemp("api_images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        channels, size = (3, 40) if i % 2 else (1, 24)
        paths.append(write_png(folder / f"img{i}.png", rng.integers(0, 256, (channels, size, size), np.uint8)))
    (folder / "broken.png").write_text("not an image")
    return folder, sorted(paths)


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, monkeypatch_module):
    """imgcls_cli.train() in a scratch folder, then evaluate() of its best.pt."""
    base = tmp_path_factory.mktemp("api_run")
    monkeypatch_module.chdir(base)
    summary = imgcls_cli.train(QUICK)
    evaluated = imgcls_cli.evaluate([f"checkpoint={summary['run_dir']}/checkpoints/best.pt"])
    return summary, evaluated


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_predict_equals_the_cli_predictions_for_paths_arrays_and_pil_images(trained_run, images, tmp_path):
    folder, paths = images
    result = run_cli("predict", f"checkpoint={trained_run.best}", f"inputs={folder}", cwd=tmp_path)
    assert_ok(result)
    cli_rows = {row["path"]: row for row in read_csv(result.run_dir / "predictions.csv")}
    model = imgcls_cli.load_model(trained_run.best)
    rgb = [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
           if cv2.imread(str(p), cv2.IMREAD_UNCHANGED).ndim == 3 else cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
           for p in paths]
    pil = [Image.open(p) for p in paths]
    by_path = model.predict([str(p) for p in paths])
    assert by_path == model.predict(paths)  # str and Path alike
    for entries in (by_path, model.predict(rgb), model.predict(pil)):
        assert len(entries) == len(paths)
        for path, entry in zip(paths, entries):
            row = cli_rows[str(path)]
            assert entry["error"] is None and entry["label"] == row["label"] and entry["label"] in model.classes
            assert entry["probability"] == pytest.approx(float(row["probability"]), abs=1e-5)
            for k, top in enumerate(entry["topk"][1:], start=2):
                assert top["label"] == row[f"top{k}_label"]
                assert top["probability"] == pytest.approx(float(row[f"top{k}_probability"]), abs=1e-5)


def test_a_file_that_is_no_image_gets_its_error_as_in_predictions_csv(trained_run, images):
    folder, paths = images
    entries = imgcls_cli.load_model(trained_run.best).predict([folder / "broken.png", paths[0]], topk=2)
    assert entries[0]["label"] is None and entries[0]["error"]
    assert entries[1]["error"] is None and len(entries[1]["topk"]) == 2


def test_mistakes_raise_user_error_with_one_line(trained_run, tmp_path, monkeypatch):
    with pytest.raises(imgcls_cli.UserError, match="not found"):
        imgcls_cli.load_model(tmp_path / "missing.pt")
    with pytest.raises(imgcls_cli.UserError, match=r"\(H, W\)"):
        imgcls_cli.load_model(trained_run.best).predict([np.zeros((2, 3, 4, 5))])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(imgcls_cli.UserError) as info:
        imgcls_cli.train(["epochs=-1"])
    assert str(info.value) == "epochs must be a whole number >= 1, not -1."
    with pytest.raises(imgcls_cli.UserError, match="unknown key 'epoch'"):
        imgcls_cli.evaluate(["epoch=3"])


def test_train_and_evaluate_return_their_summaries(api_run):
    summary, evaluated = api_run
    assert summary["status"] == "completed" and summary["run_dir"]
    assert summary == {**read_json(f"{summary['run_dir']}/summary.json"), "run_dir": summary["run_dir"]}
    assert evaluated["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert evaluated == {**read_json(f"{evaluated['run_dir']}/metrics.json"), "run_dir": evaluated["run_dir"]}


def test_import_imgcls_cli_is_cheap_and_the_api_loads_on_first_use():
    code = ("import sys, imgcls_cli; assert 'torch' not in sys.modules and 'hydra' not in sys.modules; "
            "imgcls_cli.load_model; assert 'imgcls_cli.api' in sys.modules; print('ok')")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert result.stdout.strip() == "ok", result.stderr

"""Files a user can trust: writes never replace a device or a link and never leave half a file or a temporary file
behind on a full disk; hand-made or damaged checkpoints are refused in one line before anything is built from them;
CSV cells from user data are never run as spreadsheet formulas; a FIFO among predict's inputs never hangs."""
from __future__ import annotations

import copy
import csv
import errno
import os
import re
import stat
import subprocess
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_user_error, read_csv, run_cli, run_in_one_process, write_png
from imgcls_cli import rundir
from imgcls_cli.checkpoint import load_checkpoint, save_checkpoint
from imgcls_cli.engine.predict import run_predict
from imgcls_cli.engine.reports import write_eval_reports
from imgcls_cli.errors import UserError
from imgcls_cli.models import create_model
from imgcls_cli.plots import plot_curves
from imgcls_cli.rundir import write_csv, write_text_atomic
from imgcls_cli.specs.predict import PredictSpec

KWARGS = {"widths": [4, 8], "hidden": 8, "drop_rate": 0.3, "batch_norm": True, "num_classes": 3, "in_channels": 1,
          "image_size": 16}
CLASSES = ["cat", "dog", "bird"]
HYPERLINK = '=HYPERLINK("http://x","y")'


def payload(classes=CLASSES) -> dict:
    torch.manual_seed(0)
    model = create_model("simple_cnn", **{**KWARGS, "num_classes": len(classes)})
    return {"model": {"name": "simple_cnn", "kwargs": {**KWARGS, "num_classes": len(classes)}},
            "state_dict": model.state_dict(), "classes": list(classes),
            "input": {"channels": 1, "size": 16, "mean": [0.5], "std": [0.25]},
            "config": {"dataset": {"name": "synthetic"}}, "epoch": 1, "step": 2, "metrics": {"val_accuracy": 0.5}}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A checkpoint (classes cat, dog, bird) and three 16x16 PNGs to predict."""
    base = tmp_path_factory.mktemp("trust")
    save_checkpoint(payload(), base / "best.pt")
    rng = np.random.default_rng(0)
    images = [write_png(base / "images" / f"{i}.png", rng.integers(0, 256, (1, 16, 16), dtype=np.uint8))
              for i in range(3)]
    return base, base / "best.pt", images


def predict(checkpoint: Path, inputs: str, run_dir: Path, **settings) -> dict:
    """`imgcls predict checkpoint=... inputs=... KEY=VALUE ...` without Hydra: the settings parsed as the command does."""
    return run_predict(PredictSpec.parse({"checkpoint": checkpoint, "inputs": inputs, **settings}), run_dir)


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ============================================================================ 8. devices and links are written through
def test_predict_into_dev_full_is_one_line_and_leaves_dev_alone(workspace, tmp_path):
    if not os.path.exists("/dev/full") or not stat.S_ISCHR(os.stat("/dev/full").st_mode):
        pytest.skip("no /dev/full here")
    _, ckpt, images = workspace
    before = files_in(Path("/dev"))
    result = run_cli("predict", f"checkpoint={ckpt}", f"inputs={images[0].parent}", "output=/dev/full",
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_user_error(result, "/dev/full", "no space left on device")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # still the device, not a CSV
    assert not {"full.json", "predictions.png", "predictions.json"} & files_in(Path("/dev"))
    assert files_in(Path("/dev")) <= before | {"shm", "pts", "mqueue"}


def test_predict_into_dev_null_writes_through_and_puts_the_rest_in_the_run_dir(workspace, tmp_path):
    _, ckpt, images = workspace
    before = files_in(Path("/dev"))
    summary = predict(ckpt, str(images[0].parent), tmp_path, device="cpu", num_workers=0, output="/dev/null")
    assert summary["predicted"] == 3
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert {"predictions.json", "predictions.png"} <= files_in(tmp_path)  # siblings beside a device go to the run
    assert not {"null.json", "predictions.png"} & (files_in(Path("/dev")) - before)


def test_predict_into_a_link_updates_its_target_and_the_link_stays(workspace, tmp_path):
    _, ckpt, images = workspace
    real = tmp_path / "kept" / "real.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    predict(ckpt, str(images[0].parent), tmp_path / "run", device="cpu", num_workers=0, output=str(link))
    assert link.is_symlink() and os.readlink(link) == str(real)
    rows = read_csv(real)
    assert [r["path"] for r in rows] == [str(p) for p in images] and all(r["label"] in CLASSES for r in rows)
    assert (tmp_path / "link.json").is_file()  # beside the output the user named
    assert (tmp_path / "run" / "predictions.png").is_file() and not (tmp_path / "predictions.png").exists()


def test_predict_into_a_folder_is_refused(workspace, tmp_path):
    _, ckpt, images = workspace
    with pytest.raises(UserError, match="is a folder"):
        predict(ckpt, str(images[0]), tmp_path / "run", device="cpu", num_workers=0, output=str(tmp_path))


def test_atomic_writes_follow_links_keep_modes_and_refuse_loops(tmp_path):
    target = tmp_path / "data.json"
    target.write_text("{}")
    target.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(target.name)  # relative, as `ln -s data.json link.json` makes it
    rundir.write_json(link, {"a": 1})
    assert link.is_symlink() and os.readlink(link) == "data.json"
    assert target.read_text() == '{\n  "a": 1\n}\n' and stat.S_IMODE(target.stat().st_mode) == 0o640
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "made" / "new.txt")
    write_text_atomic(dangling, "x")
    assert dangling.is_symlink() and (tmp_path / "made" / "new.txt").read_text() == "x"
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    with pytest.raises(UserError, match="symbolic link"):
        write_text_atomic(loop, "x")
    assert loop.is_symlink() and (tmp_path / "loop2").is_symlink()
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_fifo_output_is_written_through_or_refused_without_waiting(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="FIFO and nothing reads from it"):
        write_text_atomic(fifo, "nobody reads this")
    received: list[bytes] = []

    def reader() -> None:
        with open(fifo, "rb") as f:
            received.append(f.read())

    link = tmp_path / "stdout"  # as /dev/stdout is a link to the process's pipe
    link.symlink_to(fifo)
    for written in (fifo, link):
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        for _ in range(500):  # the reader opens the FIFO; then a writer can open it without waiting
            try:
                write_text_atomic(written, "a,b\n1,2\n")
                break
            except UserError:
                threading.Event().wait(0.01)
        thread.join(10)
    assert received == [b"a,b\n1,2\n"] * 2
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and link.is_symlink() and files_in(tmp_path) == {"pipe", "stdout"}


# ============================================================================ 10. a full disk
@pytest.fixture
def full_disk(tmp_path):
    """A 512 KiB tmpfs (a real full filesystem) where mounting is allowed, else None (the tests then simulate
    ENOSPC in the writer's file object)."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        done = None
    if done is None or done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=20)


def fill(folder: Path) -> None:
    """Use up every free byte of folder's filesystem."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (65536, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)


def simulate_full_disk(monkeypatch) -> None:
    real_write = rundir._RecordingFile.write

    def write(self, data):
        if not isinstance(self.name, int) and os.fspath(self.name).endswith(".tmp"):
            real_write(self, bytes(memoryview(data).cast("B")[:10]))  # a partial write, then the disk is full
            self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise self.error
        return real_write(self, data)

    monkeypatch.setattr(rundir._RecordingFile, "write", write)


def big_payload() -> dict:
    return {**payload(), "optimizer": {"state": {0: {"exp_avg": torch.randn(400_000)}}}}  # ~1.6 MB


WRITES = {
    "checkpoint": lambda p: save_checkpoint(big_payload(), p / "last.pt"),
    "json": lambda p: rundir.write_json(p / "summary.json", {"x": "y" * 2_000_000}),
    "csv": lambda p: write_csv(p / "metrics.csv", [{"epoch": i, "lr": 0.1} for i in range(200_000)], ["epoch", "lr"]),
    "png": lambda p: plot_curves([{"epoch": i, "train_loss": 1 / i, "val_loss": 1 / i} for i in range(1, 50)],
                                 p / "curves.png"),
}
FIRST = {
    "checkpoint": lambda p: save_checkpoint(payload(), p / "last.pt"),
    "json": lambda p: rundir.write_json(p / "summary.json", {"x": 1}),
    "csv": lambda p: write_csv(p / "metrics.csv", [{"epoch": 1, "lr": 0.1}], ["epoch", "lr"]),
    "png": lambda p: plot_curves([{"epoch": 1, "train_loss": 1.0}], p / "curves.png"),
}
NAMES = {"checkpoint": "last.pt", "json": "summary.json", "csv": "metrics.csv", "png": "curves.png"}


@pytest.mark.parametrize("kind", list(WRITES))
def test_a_full_disk_is_one_line_keeps_the_previous_file_and_leaves_no_temporary_file(kind, full_disk, tmp_path,
                                                                                       monkeypatch):
    folder = full_disk if full_disk is not None else tmp_path / "disk"
    folder.mkdir(exist_ok=True)
    FIRST[kind](folder)
    path = folder / NAMES[kind]
    before = path.read_bytes()
    if full_disk is not None:
        fill(folder)
    else:
        simulate_full_disk(monkeypatch)
    with pytest.raises(UserError) as info:
        WRITES[kind](folder)
    message = str(info.value)
    assert "\n" not in message and f"cannot write {'checkpoint ' if kind == 'checkpoint' else ''}{path}" in message
    assert "No space left on device" in message and "the previous file is intact" in message
    assert path.read_bytes() == before
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_torchs_own_write_error_is_one_line_too(tmp_path, monkeypatch):
    """torch.save reports a failed write as a RuntimeError about stream positions, not an OSError."""
    path = tmp_path / "best.pt"
    save_checkpoint(payload(), path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half of it")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(UserError, match=r"cannot write checkpoint .*best\.pt: .*disk full.*previous file is intact"):
        save_checkpoint(payload(), path)
    assert path.read_bytes() == before and files_in(tmp_path) == {"best.pt"}


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(payload(), path)
    assert files_in(tmp_path) == set()


# ============================================================================ 14. hand-made checkpoints
def _set(path: str, value):
    def change(ckpt: dict) -> None:
        keys = path.split(".")
        target = ckpt
        for key in keys[:-1]:
            target = target[key]
        if value is DELETE:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return change


DELETE = object()


def _nan_weight(ckpt):
    ckpt["state_dict"]["features.0.0.weight"][0, 0, 0, 0] = float("nan")


def _inf_weight(ckpt):
    ckpt["state_dict"]["head.5.bias"][1] = float("inf")


def _wrong_shape(ckpt):
    ckpt["state_dict"]["features.0.0.weight"] = torch.zeros(5, 1, 3, 3)


def _extra_weight(ckpt):
    ckpt["state_dict"]["extra.weight"] = torch.zeros(2)


def _missing_weight(ckpt):
    del ckpt["state_dict"]["features.0.0.weight"]


def _expanded(ckpt):  # a tensor of 10^12 values over one stored value
    ckpt["state_dict"]["features.0.0.weight"] = torch.zeros(1).expand(10**6, 10**6)


DAMAGE = {
    "negative_kwarg": (_set("model.kwargs.hidden", -8), "model.kwargs.hidden must be a whole number"),
    "negative_width": (_set("model.kwargs.widths", [-4, 8]), "model.kwargs.widths"),
    "string_kwarg": (_set("model.kwargs.hidden", "wide"), "hidden must be a whole number"),
    "builder_refuses": (_set("model.kwargs.batch_norm", "yes"), "cannot be built from its kwargs|batch_norm"),
    "huge_kwarg": (_set("model.kwargs.hidden", 10**12), "model.kwargs.hidden must be a whole number from 0"),
    "wider_than_its_weights": (_set("model.kwargs.hidden", 1000), "do not fit model 'simple_cnn'"),
    "deep_model": (_set("model.kwargs.widths", [4] * 256), "far more than|do not fit"),
    "nested_kwarg": (_set("model.kwargs.widths", [[4], [8]]), "must be a plain value"),
    "object_kwarg": (_set("model.kwargs.hidden", {"a": 1}), "must be a plain value"),
    "unknown_kwarg": (_set("model.kwargs.colour", "red"), "unexpected keyword argument"),
    "drop_rate_above_one": (_set("model.kwargs.drop_rate", 1.5), "probability"),
    "nan_kwarg": (_set("model.kwargs.drop_rate", float("nan")), "finite"),
    "kwargs_not_a_mapping": (_set("model.kwargs", [4, 8]), "model.kwargs must be a mapping"),
    "num_classes_disagrees": (_set("model.kwargs.num_classes", 7), "num_classes is 7 but it lists 3"),
    "in_channels_disagrees": (_set("model.kwargs.in_channels", 3), "in_channels is 3 but input.channels is 1"),
    "kwargs_image_size_huge": (_set("model.kwargs.image_size", 10**6), "image_size"),
    "unknown_model": (_set("model.name", "resnot"), "does not have: 'resnot'"),
    "model_name_not_text": (_set("model.name", 5), "model must be a mapping"),
    "model_null": (_set("model", None), "model must be a mapping"),
    "input_size_huge": (_set("input.size", 10**6), "input.size must be a whole number from 4 to 4096"),
    "input_size_text": (_set("input.size", "16"), "input.size"),
    "input_channels_zero": (_set("input.channels", 0), "input.channels"),
    "input_channels_many": (_set("input.channels", 300), "input.channels"),
    "mean_wrong_length": (_set("input.mean", [0.5, 0.5, 0.5]), "input.mean must list 1 number"),
    "std_zero": (_set("input.std", [0.0]), "input.std must be positive"),
    "mean_nan": (_set("input.mean", [float("nan")]), "finite"),
    "mean_text": (_set("input.mean", ["half"]), "finite"),
    "input_null": (_set("input", None), "input must be a mapping"),
    "classes_empty": (_set("classes", []), "non-empty list"),
    "classes_text": (_set("classes", "cat"), "non-empty list"),
    "classes_not_names": (_set("classes", [1, 2, 3]), "classes must be names"),
    "classes_twice": (_set("classes", ["cat", "dog", "cat"]), "'cat' appears twice"),
    "config_null": (_set("config", None), "config must be a mapping"),
    "config_dataset_text": (_set("config.dataset", "digits"), "config.dataset must be a mapping"),
    "config_dataset_name": (_set("config.dataset.name", 5), "config.dataset must be a mapping with a dataset name"),
    "drop_rate_negative": (_set("model.kwargs.drop_rate", -0.1), "probability"),
    "metrics_list": (_set("metrics", [0.5]), "metrics must be a mapping"),
    "epoch_negative": (_set("epoch", -1), "epoch must be a whole number"),
    "epoch_text": (_set("epoch", "one"), "epoch must be a whole number"),
    "optimizer_text": (_set("optimizer", "sgd"), "optimizer must be a mapping"),
    "task_unknown": (_set("task", "regression"), "task must be one of"),
    "nan_weights": (_nan_weight, "holds non-finite weights (NaN or infinity) in features.0.0.weight"),
    "inf_weights": (_inf_weight, "non-finite weights"),
    "weights_wrong_shape": (_wrong_shape, "features.0.0.weight has shape (5, 1, 3, 3) instead of (4, 1, 3, 3)"),
    "weights_extra": (_extra_weight, "1 unexpected (e.g. extra.weight)"),
    "weights_missing": (_missing_weight, "1 missing (e.g. features.0.0.weight)"),
    "weights_not_tensors": (_set("state_dict", {"w": [1.0, 2.0]}), "state_dict must map names to tensors"),
    "weights_empty": (_set("state_dict", {}), "state_dict must be a non-empty mapping"),
    "weights_expanded": (_expanded, "claims 1000000000000 values over a storage of 4 bytes"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_hand_made_checkpoint_is_refused_in_one_line(name, tmp_path):
    change, expected = DAMAGE[name]
    ckpt = copy.deepcopy(payload())
    change(ckpt)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(ckpt, path)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"damaged checkpoint: {path}: ") and "\n" not in message, message
    assert re.search(expected, message) or expected in message, message


def test_a_model_that_cannot_take_the_checkpoints_input_is_refused(tmp_path):
    """LeNet-5's first dense layer is sized for its image_size: an input.size that differs would fail in the
    middle of eval or predict; the model is run on the meta device first (shapes only)."""
    kwargs = {"num_classes": 3, "in_channels": 1, "image_size": 32}
    ckpt = {**payload(), "model": {"name": "lenet5", "kwargs": kwargs},
            "state_dict": create_model("lenet5", **kwargs).state_dict(),
            "input": {"channels": 1, "size": 64, "mean": [0.5], "std": [0.25]}}
    save_checkpoint(ckpt, tmp_path / "lenet.pt")
    with pytest.raises(UserError, match=r"damaged checkpoint: .*lenet\.pt: model 'lenet5' cannot take its input "
                                        r"of 1x64x64 images"):
        load_checkpoint(tmp_path / "lenet.pt")
    ckpt["input"]["size"] = 32
    save_checkpoint(ckpt, tmp_path / "lenet.pt")
    assert load_checkpoint(tmp_path / "lenet.pt")["model"]["name"] == "lenet5"


def test_a_good_hand_made_checkpoint_loads(tmp_path):
    save_checkpoint(payload(), tmp_path / "good.pt")
    ckpt = load_checkpoint(tmp_path / "good.pt")
    assert ckpt["classes"] == CLASSES and ckpt["model"]["kwargs"]["hidden"] == 8


def test_a_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    """torch.load inflates compressed entries; imgcls checkpoints never have any, so the central directory tells."""
    good = tmp_path / "good.pt"
    save_checkpoint(payload(), good)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for entry in src.infolist():
            dst.writestr(entry.filename, src.read(entry.filename))
        prefix = src.infolist()[0].filename.split("/")[0]
        dst.writestr(f"{prefix}/data/999", b"\0" * 50_000_000)  # 50 MB of zeros in ~50 KB
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(UserError, match=r"damaged checkpoint: .*bomb\.pt: its entry .* is compressed"):
        load_checkpoint(bomb)


def test_an_entry_larger_than_the_file_is_refused(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(payload(), good)
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        entry = archive.infolist()[-1]
    # Forge the central directory's sizes of the last entry (compressed = uncompressed = 2 GB, stored).
    central, start = -1, 0
    while (at := data.find(b"PK\x01\x02", start)) >= 0:
        name_len = int.from_bytes(data[at + 28:at + 30], "little")
        if bytes(data[at + 46:at + 46 + name_len]).decode() == entry.filename:
            central = at
        start = at + 4
    assert central >= 0
    data[central + 20:central + 24] = (2**31).to_bytes(4, "little")
    data[central + 24:central + 28] = (2**31).to_bytes(4, "little")
    forged = tmp_path / "forged.pt"
    forged.write_bytes(bytes(data))
    with pytest.raises(UserError, match="more than the file's"):
        load_checkpoint(forged)


def test_a_fifo_as_checkpoint_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "best.pt"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        load_checkpoint(fifo)


def test_eval_and_predict_refuse_damaged_checkpoints_in_one_line(workspace, tmp_path):
    _, _, images = workspace
    nan = copy.deepcopy(payload())
    _nan_weight(nan)
    save_checkpoint(nan, tmp_path / "nan.pt")
    huge = copy.deepcopy(payload())
    huge["input"]["size"] = 10**6
    save_checkpoint(huge, tmp_path / "huge.pt")
    runs = run_in_one_process({
        "predict": (["predict", f"checkpoint={tmp_path / 'nan.pt'}", f"inputs={images[0]}",
                     f"hydra.run.dir={tmp_path / 'p'}"], tmp_path),
        "eval": (["eval", f"checkpoint={tmp_path / 'huge.pt'}", f"hydra.run.dir={tmp_path / 'e'}"], tmp_path),
    })
    assert_user_error(runs["predict"], "damaged checkpoint", "nan.pt", "non-finite weights")
    assert_user_error(runs["eval"], "damaged checkpoint", "huge.pt", "input.size")


# ============================================================================ 15. spreadsheet formulas
def test_csv_cells_from_user_data_are_never_formulas_and_read_back_as_given(tmp_path):
    names = [HYPERLINK, "+cmd", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)", "\tTAB", "\rCR", "'=already quoted", "plain",
             "-1", "+3.5", "1e-3"]
    rows = [{"class": n, "value": -0.5, "count": -3} for n in names]
    path = tmp_path / "t.csv"
    write_csv(path, rows, ["class", "value", "count"])
    with open(path, newline="", encoding="utf-8") as f:
        raw = [row[0] for row in csv.reader(f)][1:]
    assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for cell in raw[:7]), raw
    assert raw[:7] == ["'" + n for n in names[:7]]
    assert raw[7:] == ["plain", "-1", "+3.5", "1e-3"]  # numbers written as text are not formulas
    assert "-0.5" in path.read_text() and ",-3" in path.read_text()  # the tool's numbers as they are
    assert [r["class"] for r in read_csv_tool(path)] == names  # imgcls reads its own files back unchanged


def test_quoted_ids_in_splits_csv_keep_their_split(tmp_path):
    """splits.csv goes through write_csv too: an id starting with '=' (a class folder named so) is quoted on disk
    and still found in its split when eval reads the file back."""
    from imgcls_cli.data.datasets import _indices_from_file

    ids = [f"{HYPERLINK}/0.png", "-1", "dog/1.png", "@cat/2.png"]
    write_csv(tmp_path / "splits.csv", [{"path": i, "split": s} for i, s in zip(ids, ["train", "val", "test", "test"])],
              ["path", "split"])
    assert "'=HYPERLINK" in (tmp_path / "splits.csv").read_text(encoding="utf-8")
    indices = _indices_from_file(tmp_path / "splits.csv", ids)
    assert [list(indices[s]) for s in ("train", "val", "test")] == [[0], [1], [2, 3]]


def read_csv_tool(path: Path) -> list[dict[str, str]]:
    return rundir.read_csv(path)


def test_predictions_and_reports_of_a_formula_class_are_quoted(tmp_path):
    classes = [HYPERLINK, "dog", "bird"]
    save_checkpoint(payload(classes), tmp_path / "f.pt")
    rng = np.random.default_rng(1)
    image = write_png(tmp_path / "x.png", rng.integers(0, 256, (1, 16, 16), dtype=np.uint8))
    predict(tmp_path / "f.pt", str(image), tmp_path / "run", device="cpu", num_workers=0, topk=3)
    text = (tmp_path / "run" / "predictions.csv").read_text(encoding="utf-8")
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text and '"=HYPERLINK' not in text
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    write_eval_reports(tmp_path / "eval", probs, np.array([0, 1, 2]), classes, ["a", "b", "c"], "index", 2)
    for name in ("per_class.csv", "confusion_matrix.csv", "confusion_matrix_normalized.csv", "predictions.csv"):
        cells = [cell for line in (tmp_path / "eval" / name).read_text(encoding="utf-8").splitlines()
                 for cell in line.split(",")]
        assert not any(c.lstrip('"').startswith("=") for c in cells), (name, cells)
        assert any(c.lstrip('"').startswith("'=HYPERLINK") for c in cells), name


# ============================================================================ 12. FIFOs among predict's inputs
def predict_with_fifo_guard(fifos: list[Path], *args, **kwargs):
    """predict() in a thread; if it is still waiting on a FIFO after 60 s, the FIFOs are opened for writing (so
    a reader gets end-of-file) and the test fails instead of hanging."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["summary"] = predict(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        thread.join(10)
        pytest.fail("predict waited on a FIFO")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["summary"]


def test_a_fifo_in_a_list_file_or_glob_gets_an_error_row_and_never_hangs(workspace, tmp_path):
    _, ckpt, images = workspace
    fifo = tmp_path / "photos" / "stream.png"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    listed = tmp_path / "list.txt"
    listed.write_text(f"{images[0]}\n{fifo}\n{images[1]}\n")
    summary = predict_with_fifo_guard([fifo], ckpt, f"@{listed}", tmp_path / "list", device="cpu", num_workers=0)
    assert summary["predicted"] == 2 and summary["failed"] == 1
    rows = read_csv(tmp_path / "list" / "predictions.csv")
    assert [r["path"] for r in rows] == [str(images[0]), str(fifo), str(images[1])]
    assert rows[1]["error"] == "not a regular file (a FIFO)" and rows[1]["label"] == ""
    assert rows[0]["error"] == "" and rows[0]["label"] in CLASSES
    for image in images:
        os.link(image, tmp_path / "photos" / image.name)
    predict_with_fifo_guard([fifo], ckpt, str(tmp_path / "photos" / "*.png"), tmp_path / "glob", device="cpu",
                            num_workers=0)
    rows = {r["path"]: r for r in read_csv(tmp_path / "glob" / "predictions.csv")}
    assert rows[str(fifo)]["error"] == "not a regular file (a FIFO)" and len(rows) == 4
    summary = predict_with_fifo_guard([fifo], ckpt, str(tmp_path / "photos"), tmp_path / "folder", device="cpu",
                                      num_workers=0)
    assert summary["predicted"] == 3  # a folder's walk lists regular files only


def test_a_fifo_as_the_input_or_the_list_file_is_one_line(workspace, tmp_path):
    _, ckpt, _ = workspace
    fifo = tmp_path / "stream.png"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        predict_with_fifo_guard([fifo], ckpt, str(fifo), tmp_path / "one", device="cpu", num_workers=0)
    with pytest.raises(UserError, match="the list file .* is a FIFO, not a regular file"):
        predict_with_fifo_guard([fifo], ckpt, f"@{fifo}", tmp_path / "list", device="cpu", num_workers=0)

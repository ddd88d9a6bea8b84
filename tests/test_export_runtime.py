"""`imgcls predict` and `imgcls eval` of exported models: an ONNX file run by ONNX Runtime and a torch.export program
(.pt2) give the predictions and metrics of the checkpoint they were exported from; files that cannot be run are
refused in one line.

The exported files are made here from a small digits run (torch.onnx.export with the dynamo exporter,
torch.export.save), with the imgcls metadata the export writes (export/metadata.py): these tests do not depend on
`imgcls export` itself.
"""
from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (Result, assert_ok, assert_user_error, read_csv, read_json, run_cli, run_in_one_process,
                      write_broken_files, write_png)
from imgcls_cli.checkpoint import load_checkpoint
from imgcls_cli.errors import UserError
from imgcls_cli.export import metadata
from imgcls_cli.export.runtime import load_for_inference, model_from_checkpoint

SIZE = 16
TRAIN = ["train", "dataset=digits", f"dataset.image_size={SIZE}", "model.widths=[8,16,16]", "model.hidden=32",
         "epochs=3", "batch_size=32", "optimizer.lr=0.005"]  # ~0.97 test accuracy in a few seconds
TOLERANCE = 1e-4  # max |difference| of a probability between the checkpoint and its export
PROBABILITY_COLUMNS = ["probability", *(f"top{k}_probability" for k in range(2, 6))]
LABEL_COLUMNS = ["label", *(f"top{k}_label" for k in range(2, 6))]


# --------------------------------------------------------------------------------------------- exported files
def export_onnx(model: torch.nn.Module, path: Path, props: dict[str, str] | None) -> Path:
    """The model as ONNX (input "input", output "logits", a dynamic batch), with `props` as its metadata_props."""
    import onnx

    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(model, (torch.zeros(2, 1, SIZE, SIZE),), dynamo=True, input_names=["input"],
                                output_names=["logits"], dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(path))
    if props:
        write_onnx_metadata(path, props)
    onnx.checker.check_model(str(path))
    return path


def write_onnx_metadata(path: Path, props: dict[str, str], to: Path | None = None) -> Path:
    """The ONNX file at path with its metadata_props replaced by props (written to `to`, or in place)."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(to or path))
    return to or path


def export_program(model: torch.nn.Module, path: Path, props: dict[str, str] | None) -> Path:
    """The model as a torch.export program with a dynamic batch, props in its extra file imgcls.json."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (torch.zeros(2, 1, SIZE, SIZE),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path), extra_files={metadata.EXTRA_FILE: json.dumps(props)} if props else None)
    return path


def with_pickled_weight(source: Path, path: Path, marker: Path) -> Path:
    """A copy of a .pt2 whose first weight is a pickle (its config says use_pickle) that creates `marker` when
    unpickled, as torch.export.load would."""
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with zipfile.ZipFile(source) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    config_name = next(n for n in entries if n.endswith("model_weights_config.json"))
    config = json.loads(entries[config_name])
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    buffer = io.BytesIO()
    torch.save(Payload(), buffer)
    entries[config_name] = json.dumps(config).encode()
    entries[str(Path(config_name).parent / first["path_name"])] = buffer.getvalue()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def digit_images(folder: Path, count: int = 24) -> Path:
    """scikit-learn's first digits as 8x8 gray PNG files, and two files that do not decode."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(count):
        write_png(folder / f"{i:02d}_{digits.target[i]}.png", (digits.images[i] * 255 / 16).astype(np.uint8)[None])
    write_broken_files(folder)
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A digits run's best.pt, its exports (good and bad ones) and a folder of images."""
    base = tmp_path_factory.mktemp("deployed")
    assert_ok(run_cli(*TRAIN, f"hydra.run.dir={base / 'run'}", cwd=base))
    best = base / "run" / "checkpoints" / "best.pt"
    ckpt = load_checkpoint(best)
    model = model_from_checkpoint(ckpt, torch.device("cpu"))
    props = metadata.from_checkpoint(ckpt, best, metadata.sha256_file(best))
    out = {"base": base, "best": best, "images": digit_images(base / "images"), "pwned": base / "PWNED"}
    out["onnx"] = export_onnx(model, base / "model.onnx", props)
    out["pt2"] = export_program(model, base / "model.pt2", props)
    out["moved"] = write_onnx_metadata(out["onnx"], {**props, metadata.PREFIX + "source": str(base / "gone.pt")},
                                       base / "moved.onnx")
    out["no_metadata"] = write_onnx_metadata(out["onnx"], {}, base / "no_metadata.onnx")
    wrong = json.dumps({**json.loads(props[metadata.PREFIX + "input"]), "size": 2 * SIZE})
    out["wrong_shape"] = write_onnx_metadata(out["onnx"], {**props, metadata.PREFIX + "input": wrong},
                                             base / "wrong_shape.onnx")
    (base / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4000))
    (base / "truncated.onnx").write_bytes(out["onnx"].read_bytes()[:3000])
    (base / "truncated.pt2").write_bytes(out["pt2"].read_bytes()[:5000])
    out["pt2_no_metadata"] = export_program(model, base / "no_metadata.pt2", None)
    out["pickled"] = with_pickled_weight(out["pt2"], base / "pickled.pt2", out["pwned"])
    return out


@pytest.fixture(scope="module")
def runs(files) -> dict[str, Result]:
    """Every predict and eval, through cli.main in one process."""
    base, best, onnx, pt2 = files["base"], files["best"], files["onnx"], files["pt2"]
    images = f"inputs={files['images']}"
    other_split = ["dataset=digits", "dataset.test_fraction=0.3"]
    args = {
        "predict_pt": ["predict", f"checkpoint={best}", images, "precision=fp32"],
        "predict_onnx": ["predict", f"checkpoint={onnx}", images],
        "predict_pt2": ["predict", f"checkpoint={pt2}", images],
        "eval_pt": ["eval", f"checkpoint={best}", "precision=fp32"],
        "eval_onnx": ["eval", f"checkpoint={onnx}"],
        "eval_pt2": ["eval", f"checkpoint={pt2}"],
        "tta_pt": ["eval", f"checkpoint={best}", "precision=fp32", "tta=hflip"],
        "tta_onnx": ["eval", f"checkpoint={onnx}", "tta=hflip"],
        "ensemble": ["eval", f"checkpoint=[{best},{onnx}]", "precision=fp32"],
        "other_split_pt": ["eval", f"checkpoint={best}", "precision=fp32", *other_split],
        "other_split_onnx": ["eval", f"checkpoint={onnx}", *other_split],
        "moved": ["eval", f"checkpoint={files['moved']}"],
        "moved_other_split": ["eval", f"checkpoint={files['moved']}", *other_split],
        **{name: ["predict", f"checkpoint={base / name.replace('_onnx', '.onnx').replace('_pt2', '.pt2')}", images]
           for name in ("random_onnx", "truncated_onnx", "no_metadata_onnx", "wrong_shape_onnx", "truncated_pt2",
                        "no_metadata_pt2", "pickled_pt2")},
        "features": ["eval", f"checkpoint={onnx}", "features=true"],
        "bf16": ["predict", f"checkpoint={onnx}", images, "precision=bf16"],
        "init": [*TRAIN, f"init={onnx}"],
        "resume": [*TRAIN, f"resume={onnx}"],
    }
    # On the CPU: a GPU's TF32 convolutions would differ from an fp32 export by more than the tolerance.
    return run_in_one_process({name: ([*a, "device=cpu"] if a[0] != "train" else a, base / "calls" / name)
                               for name, a in args.items()})


def probabilities(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([[float(r[c]) if r[c] else np.nan for c in PROBABILITY_COLUMNS] for r in rows])


def assert_same_predictions(ours: Path, theirs: Path) -> None:
    """The same labels (top 5) and errors row by row, probabilities within TOLERANCE."""
    a, b = read_csv(ours), read_csv(theirs)
    assert len(a) == len(b) > 0
    assert [[r[c] for c in ("path", "index", *LABEL_COLUMNS, "error") if c in r] for r in a] == \
        [[r[c] for c in ("path", "index", *LABEL_COLUMNS, "error") if c in r] for r in b]
    assert np.allclose(probabilities(a), probabilities(b), atol=TOLERANCE, rtol=0, equal_nan=True)


# --------------------------------------------------------------------------------------------- the same numbers
@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_predict_of_an_export_gives_the_checkpoints_labels_and_probabilities(runs, kind):
    reference, result = runs["predict_pt"], runs[f"predict_{kind}"]
    assert_ok(reference)
    assert_ok(result)
    rows = read_csv(result.run_dir / "predictions.csv")
    assert sum(bool(r["error"]) for r in rows) == 2 and len(rows) == 26  # the broken files get their rows
    assert_same_predictions(result.run_dir / "predictions.csv", reference.run_dir / "predictions.csv")
    assert (result.run_dir / "predictions.png").is_file()


@pytest.mark.parametrize("kind", ["onnx", "pt2", "tta_onnx"])
def test_eval_of_an_export_gives_the_checkpoints_metrics(runs, kind):
    """The test split of the run (its splits.csv, beside the source checkpoint), scored with the same numbers."""
    reference = runs["tta_pt" if kind.startswith("tta") else "eval_pt"]
    result = runs[kind if kind.startswith("tta") else f"eval_{kind}"]
    assert_ok(reference)
    assert_ok(result)
    ours, theirs = read_json(result.run_dir / "metrics.json"), read_json(reference.run_dir / "metrics.json")
    assert ours["num_samples"] == theirs["num_samples"] > 300
    assert ours["accuracy"] == theirs["accuracy"] > 0.8
    assert abs(ours["log_loss"] - theirs["log_loss"]) < 1e-4
    assert ours["epoch"] is None and ours["checkpoint"].endswith(kind.removeprefix("tta_"))
    assert_same_predictions(result.run_dir / "predictions.csv", reference.run_dir / "predictions.csv")


def test_an_ensemble_of_a_checkpoint_and_its_export(runs):
    """Members combine by probabilities: the mean of a model and its export is the model's."""
    result = runs["ensemble"]
    assert_ok(result)
    single = read_json(runs["eval_pt"].run_dir / "metrics.json")
    for metrics in (read_json(result.run_dir / "metrics.json"),
                    read_json(result.run_dir / "members" / "1" / "metrics.json")):
        assert metrics["accuracy"] == single["accuracy"]
    assert read_json(result.run_dir / "members" / "1" / "metrics.json")["checkpoint"].endswith("model.onnx")


def test_eval_of_an_export_leaves_out_the_images_its_run_learned_from(runs):
    """Another split of the digits: the images the source checkpoint's run trained and validated on (its
    splits.csv) are left out, as for the checkpoint itself."""
    reference, result = runs["other_split_pt"], runs["other_split_onnx"]
    assert_ok(reference)
    assert_ok(result)
    ours, theirs = read_json(result.run_dir / "metrics.json"), read_json(reference.run_dir / "metrics.json")
    assert ours["excluded_seen"] == theirs["excluded_seen"] > 0
    assert ours["accuracy"] == theirs["accuracy"] and ours["num_samples"] == theirs["num_samples"]


def test_an_export_whose_source_run_is_gone_scores_the_split_made_again(runs):
    """Without the run's splits.csv, the run's own test split is made again from its settings (the same images);
    another split cannot leave out what the run learned from, and is refused."""
    assert_ok(runs["moved"])
    ours = read_json(runs["moved"].run_dir / "metrics.json")
    theirs = read_json(runs["eval_pt"].run_dir / "metrics.json")
    assert ours["accuracy"] == theirs["accuracy"] and ours["num_samples"] == theirs["num_samples"]
    assert_user_error(runs["moved_other_split"], "cannot tell which images", "moved.onnx", "splits.csv")


# --------------------------------------------------------------------------------------------- refused in one line
REFUSED = {
    "random_onnx": ["random.onnx", "not a readable ONNX model"],
    "truncated_onnx": ["truncated.onnx", "not a readable ONNX model"],
    "no_metadata_onnx": ["no_metadata.onnx", "imgcls.classes", "imgcls.input", "imgcls export"],
    "wrong_shape_onnx": ["wrong_shape.onnx", f"1x{SIZE}x{SIZE}", f"1x{2 * SIZE}x{2 * SIZE}"],
    "truncated_pt2": ["truncated.pt2", "not a readable torch.export program"],
    "no_metadata_pt2": ["no_metadata.pt2", "imgcls.classes", "imgcls export"],
    "pickled_pt2": ["pickled.pt2", "pickled", "nothing in it was run"],
    "features": ["features=true", "model.onnx", "embeddings"],
    "bf16": ["precision=bf16", "model.onnx", "fp32"],
    "init": ["model.onnx", "exported ONNX model", ".pt checkpoint"],
    "resume": ["resume=", "model.onnx"],
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_file_that_cannot_run_is_refused_in_one_line(runs, case):
    assert_user_error(runs[case], *REFUSED[case])
    assert not list(runs[case].cwd.rglob("predictions.csv")) and not list(runs[case].cwd.rglob("metrics.json"))


def test_a_pickle_in_a_pt2_archive_is_never_run(files, runs):
    assert_user_error(runs["pickled_pt2"])
    assert b"builtins" in files["pickled"].read_bytes()  # the payload really is in there
    assert not files["pwned"].exists(), "loading a .pt2 ran code from it"


def test_without_onnxruntime_an_onnx_file_says_what_to_install(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(UserError) as err:
        load_for_inference(files["onnx"], torch.device("cpu"))
    assert str(err.value) == f"checkpoint={files['onnx']} needs onnxruntime: pip install 'imgcls[export]'"



def test_every_exported_suffix_is_run_here_and_refused_for_training():
    """The files eval and predict run (export/runtime.LOADERS) are those load_checkpoint refuses as exported."""
    from imgcls_cli.checkpoint import EXPORTED
    from imgcls_cli.export.runtime import LOADERS

    assert set(LOADERS.names()) - {".pt"} == set(EXPORTED)

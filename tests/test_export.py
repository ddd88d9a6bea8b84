"""`imgcls export`: ONNX, int8 ONNX and .pt2 files that run without imgcls, carry their metadata and agree with the
checkpoint; every registered model exports; mistakes are one line and leave no file under a final name.

One child process (conftest.run_in_one_process) trains a small digits checkpoint and runs every export and mistake
through `imgcls_cli.cli.main`; the files are then read back here with onnx, ONNX Runtime and torch.export alone.
The model registry is exported in this process (random weights, no CLI)."""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, assert_ok, assert_user_error, cli_env, read_json, run_in_one_process

TRAIN = ["train", "dataset=digits", "dataset.image_size=16", "epochs=4", "seed=0"]
MISSING_EXTRA = "format=onnx needs onnx, onnxscript and onnxruntime"
# name -> (export's arguments, what its one line names); {base}: the scratch folder, {best}: the trained checkpoint
MISTAKES = {
    "not_a_checkpoint": (["checkpoint={base}/notes.txt"], "not an imgcls checkpoint"),
    "no_checkpoint_file": (["checkpoint={base}/nowhere.pt"], "checkpoint not found"),
    "unwritable_run_dir": (["checkpoint={best}", "hydra.run.dir={base}/notes.txt/export"], "hydra.run.dir"),
    "unknown_format": (["checkpoint={best}", "format=tflite"], "format must be one of onnx, torch_export"),
    "int8_without_onnx": (["checkpoint={best}", "format=torch_export", "quantize=int8"], "format=onnx"),
    "old_opset": (["checkpoint={best}", "opset=12"], "opset"),
    "no_calibration": (["checkpoint={best}", "quantize=int8", "calibration_samples=0"], "calibration_samples"),
    "cuda": (["checkpoint={best}", "device=cuda"], "on the CPU"),
    "finished_run_dir": (["checkpoint={best}", "hydra.run.dir={base}/all"], "already holds a finished run"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The training run, `export format=all quantize=int8`, and every mistake, in one child process."""
    base = tmp_path_factory.mktemp("export")
    (base / "notes.txt").write_text("not a checkpoint: plain text\n")
    best = base / "run" / "checkpoints" / "best.pt"
    calls = {"train": ([*TRAIN, f"hydra.run.dir={base / 'run'}"], base),
             "all": (["export", f"checkpoint={best}", "format=all", "quantize=int8", f"hydra.run.dir={base / 'all'}"],
                     base)}
    for name, (args, _) in MISTAKES.items():
        run_dir = [] if any(a.startswith("hydra.run.dir") for a in args) else [f"hydra.run.dir={base / name}"]
        calls[name] = (["export", *(a.format(base=base, best=best) for a in args), *run_dir], base)
    results = run_in_one_process(calls)
    assert_ok(results["train"])
    return {"base": base, "best": best, "results": results}


@pytest.fixture(scope="module")
def export_all(runs) -> dict:
    result = runs["results"]["all"]
    assert_ok(result)
    report = read_json(result.run_dir / "export.json")
    return {"result": result, "dir": result.run_dir, "report": report,
            "files": {(e["format"], e["quantize"]): e for e in report["files"]}}


def checkpoint_model(best: Path):
    from imgcls_cli.checkpoint import load_checkpoint
    from imgcls_cli.engine.inference import model_from_checkpoint

    ckpt = load_checkpoint(best)
    return ckpt, model_from_checkpoint(ckpt, torch.device("cpu"))


def test_export_writes_the_three_files_a_table_and_its_run_directory_last(export_all, runs):
    run_dir, result = export_all["dir"], export_all["result"]
    assert run_dir.parent == runs["base"] and run_dir.name == "all"
    names = {p.name for p in run_dir.iterdir()}
    assert {"simple_cnn.onnx", "simple_cnn.int8.onnx", "simple_cnn.pt2", "simple_cnn.pt2.json", "export.json",
            "config.yaml"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    for name in ("simple_cnn.onnx", "simple_cnn.int8.onnx", "simple_cnn.pt2"):
        assert re.search(rf"{re.escape(name)}\s.*\d\.\d{{4}}", result.stdout), result.stdout  # its table row
    assert result.stdout_lines[-1] == f"Run directory: {run_dir}"


def test_export_json_records_every_file_and_its_agreement_with_the_checkpoint(export_all, runs):
    from imgcls_cli.export.metadata import sha256_file

    report, files = export_all["report"], export_all["files"]
    assert report["source"] == str(runs["best"]) and report["sha256"] == sha256_file(runs["best"])
    assert report["verified_on"] == {"dataset": "digits", "split": "test", "n_images": 256}
    assert [(e["format"], e["quantize"]) for e in report["files"]] == [
        ("onnx", "none"), ("onnx", "int8_static"), ("torch_export", "none")]
    for entry in report["files"]:
        path = Path(entry["path"])
        assert path.parent == export_all["dir"] and path.name == entry["file"]
        assert entry["bytes"] == path.stat().st_size and entry["n_images"] == 256
    for key in (("onnx", "none"), ("torch_export", "none")):  # fp32: the checkpoint's answers
        assert files[key]["top1_agreement"] >= 0.999 and files[key]["max_abs_prob_diff"] <= 1e-4, files[key]
        assert files[key]["accuracy"] == files[key]["checkpoint_accuracy"] >= 0.9
    assert files[("onnx", "none")]["opset"] == 18 and files[("torch_export", "none")]["opset"] is None


def test_onnx_file_carries_its_metadata_and_runs_in_onnx_runtime_at_any_batch(export_all, runs):
    import onnx
    import onnxruntime as ort

    from imgcls_cli.export import metadata

    path = export_all["dir"] / "simple_cnn.onnx"
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 18 or any(o.version == 18 for o in model.opset_import)
    props = {p.key: p.value for p in model.metadata_props}
    ckpt, torch_model = checkpoint_model(runs["best"])
    expected = metadata.from_checkpoint(ckpt, str(runs["best"]), metadata.sha256_file(runs["best"]))
    assert {k: props[k] for k in expected} == expected
    deployed = metadata.parse(props, str(path))
    assert list(deployed.classes) == [str(c) for c in ckpt["classes"]] and deployed.input.size == 16
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and session.get_inputs()[0].shape[0] == "batch"
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for batch in (1, 5):
        x = torch.randn(batch, 1, 16, 16, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected_logits = torch_model(x).numpy()
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected_logits, rtol=1e-4, atol=1e-4)


def test_pt2_file_loads_with_torch_export_and_carries_the_same_metadata(export_all, runs):
    path = export_all["dir"] / "simple_cnn.pt2"
    extra = {"imgcls.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    props = json.loads(extra["imgcls.json"])
    onnx_props = read_metadata_props(export_all["dir"] / "simple_cnn.onnx")
    assert props == {k: v for k, v in onnx_props.items() if k.startswith("imgcls.")}
    assert json.loads((export_all["dir"] / "simple_cnn.pt2.json").read_text()) == props
    _, torch_model = checkpoint_model(runs["best"])
    for batch in (1, 3):
        x = torch.randn(batch, 1, 16, 16, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), torch_model(x), rtol=1e-5, atol=1e-5)


def read_metadata_props(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_int8_file_is_quantized_smaller_and_keeps_the_accuracy_within_a_point(export_all):
    import onnx

    entry, fp32 = export_all["files"][("onnx", "int8_static")], export_all["files"][("onnx", "none")]
    model = onnx.load(entry["path"])
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert entry["bytes"] < 0.4 * fp32["bytes"]
    assert entry["checkpoint_accuracy"] == fp32["checkpoint_accuracy"]
    assert entry["accuracy"] >= entry["checkpoint_accuracy"] - 0.01, entry
    assert read_metadata_props(Path(entry["path"]))["imgcls.quantize"] == "int8_static"


@pytest.mark.parametrize("case", list(MISTAKES))
def test_a_mistake_is_one_line_and_leaves_no_exported_file(runs, case):
    result = runs["results"][case]
    assert_user_error(result, MISTAKES[case][1])
    if case != "finished_run_dir":  # that one is the export run's directory, left as it was
        run_dir = runs["base"] / case
        assert not run_dir.exists() or not {p.suffix for p in run_dir.iterdir()} & {".onnx", ".pt2", ".json"}


def test_without_the_export_extra_onnx_is_one_line_and_torch_export_still_works(runs, tmp_path):
    """A folder on PYTHONPATH whose onnx.py raises ImportError stands for an install without the extra."""
    hidden = tmp_path / "no_onnx"
    hidden.mkdir()
    (hidden / "onnx.py").write_text("raise ImportError(\"No module named 'onnx'\")\n")
    env = {**cli_env(), "PYTHONPATH": str(hidden)}
    best = runs["best"]
    results = run_in_one_process({
        "onnx": (["export", f"checkpoint={best}", f"hydra.run.dir={tmp_path / 'onnx'}"], tmp_path),
        "pt2": (["export", f"checkpoint={best}", "format=torch_export", f"hydra.run.dir={tmp_path / 'pt2'}"],
                tmp_path),
    }, env=env)
    line = assert_user_error(results["onnx"], MISSING_EXTRA, "pip install 'imgcls[export]'")
    assert "(onnx is missing" in line
    assert not list((tmp_path / "onnx").glob("*.onnx"))
    assert_ok(results["pt2"])
    assert (results["pt2"].run_dir / "simple_cnn.pt2").is_file()


# ------------------------------------------------------------------------------- a file takes its name once checked
def small_onnx():
    from imgcls_cli.data.inputs import InputSpec
    from imgcls_cli.export import onnx as onnx_files
    from imgcls_cli.export.trace import trace
    from imgcls_cli.models import create_model

    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=4, in_channels=1, image_size=16).eval()
    spec = InputSpec(1, 16, (0.5,), (0.25,))
    return model, onnx_files.convert(trace(model, spec, "lenet5"), 18, "lenet5")


def test_a_file_that_fails_its_check_never_takes_its_final_name(tmp_path):
    from imgcls_cli.errors import UserError
    from imgcls_cli.export import onnx as onnx_files
    from imgcls_cli.export.verify import check_fp32, compare, onnx_logits, publish, torch_logits

    model, proto = small_onnx()
    images = torch.randn(20, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = np.zeros(20, np.int64)
    reference = torch_logits(model, images)
    final = tmp_path / "lenet5.onnx"
    seen = []

    def check(path: Path, shift: float):
        seen.append(path.name)
        logits = onnx_logits(path, images.numpy(), final.name)
        return check_fp32(compare(reference + shift, logits, labels), final.name)

    with pytest.raises(UserError, match=r"lenet5.onnx does not match the checkpoint on 20 test images"):
        publish(final, lambda path: onnx_files.write(proto, path), lambda path: check(path, 0.5 * np.arange(4)))
    assert seen == [f".lenet5.onnx.{os.getpid()}.tmp"] and list(tmp_path.iterdir()) == []
    agreement = publish(final, lambda path: onnx_files.write(proto, path), lambda path: check(path, 0.0))
    assert agreement.top1_agreement == 1.0 and [p.name for p in tmp_path.iterdir()] == ["lenet5.onnx"]


def test_a_write_cut_short_leaves_no_file_under_the_final_name(tmp_path):
    """The file size limit (RLIMIT_FSIZE) stops the write midway, as a full disk would."""
    from imgcls_cli.errors import UserError
    from imgcls_cli.export import onnx as onnx_files
    from imgcls_cli.export.verify import publish

    _, proto = small_onnx()
    final = tmp_path / "lenet5.onnx"
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(UserError, match=r"cannot write .*lenet5.onnx.*: File too large"):
            publish(final, lambda path: onnx_files.write(proto, path), lambda path: pytest.fail("checked"))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert list(tmp_path.iterdir()) == []


def test_a_model_without_convolutions_is_quantized_dynamically(tmp_path):
    import onnxruntime as ort

    from imgcls_cli.data.inputs import InputSpec
    from imgcls_cli.export import onnx as onnx_files
    from imgcls_cli.export.quantize import DYNAMIC, quantize
    from imgcls_cli.export.trace import trace

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))
    proto = onnx_files.convert(trace(model, InputSpec(1, 8, (0.5,), (0.25,)), "mlp"), 18, "mlp")
    images = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    int8, kind = quantize(proto, images.numpy(), tmp_path, "mlp")
    assert kind == DYNAMIC and list(tmp_path.iterdir()) == []  # its scratch files are gone
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & {n.op_type for n in int8.graph.node}
    session = ort.InferenceSession(int8.SerializeToString(), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(images).numpy()
    logits = session.run(None, {"input": images.numpy()})[0]
    assert np.abs(logits - expected).max() < 0.05 * np.abs(expected).max()


# ---------------------------------------------------------------------------------- a model that cannot be exported
class Eigen(torch.nn.Module):
    """A convolution, then eigenvalues (aten.linalg_eig): torch.export traces it, ONNX has no conversion for it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)[:, 0, :3, :3]
        return torch.linalg.eigvals(y).real


class DataDependent(torch.nn.Module):
    """A branch on the input's values: torch.export cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x.mean((2, 3))
        return x.amax((2, 3))


def test_an_operator_without_an_onnx_conversion_is_one_line_naming_it():
    from imgcls_cli.data.inputs import InputSpec
    from imgcls_cli.errors import UserError
    from imgcls_cli.export import onnx as onnx_files
    from imgcls_cli.export.trace import trace

    spec = InputSpec(1, 8, (0.5,), (0.25,))
    program = trace(Eigen(), spec, "eigen")
    with pytest.raises(UserError) as caught:
        onnx_files.convert(program, 18, "eigen")
    line = str(caught.value)
    assert "\n" not in line and "model 'eigen' cannot be exported" in line and "aten.linalg_eig" in line, line
    with pytest.raises(UserError) as caught:
        trace(DataDependent(), spec, "branchy")
    line = str(caught.value)
    assert "\n" not in line and "data-dependent control flow" in line and "if x.sum() > 0:" in line, line


# ---------------------------------------------------------------------------------------- every registered model
# Seconds to export and run each model, 1 + 3 channels (2 shared CPU cores, 2026-12; 350 s in all): densenet121 40,
# efficientnet_b2 39, efficientnet_b1 33, efficientnet_b3 27, densenet_bc_100 24, efficientnet_b0 21, resnet101 20,
# tv mobilenet_v3_small 19, efficientnet 15, resnet50 14, resnet34 13, tv resnet18 13, vgg19 11, vgg13 9, vgg16 9,
# simple_cnn 7, vgg11 7, resnet9 7, alexnet 7, resnet18 6, resnet 5, lenet5 3. By default every family runs once, the
# two channel counts shared among them (about 45 s); IMGCLS_EXPORT_ALL_MODELS=1 runs every model with both.
QUICK = {"simple_cnn-1ch", "simple_cnn-3ch", "lenet5-1ch", "alexnet-3ch", "vgg11-1ch", "resnet9-3ch", "resnet-1ch",
         "efficientnet-3ch", "densenet_bc_100-1ch", "tv_resnet18-3ch"}
ALL_MODELS = os.environ.get("IMGCLS_EXPORT_ALL_MODELS") == "1"


def registry_cases() -> list:
    from imgcls_cli.models import MODELS

    cases = [(name, name, {}) for name in MODELS.names() if name != "tv"]
    cases += [(f"tv_{arch}", "tv", {"arch": arch}) for arch in ("resnet18", "mobilenet_v3_small")]
    skip = pytest.mark.skipif(not ALL_MODELS, reason="a costly export: IMGCLS_EXPORT_ALL_MODELS=1 runs it")
    ids = [(f"{case}-{channels}ch", name, kwargs, channels) for case, name, kwargs in cases for channels in (1, 3)]
    return [pytest.param(name, kwargs, channels, id=id_, marks=() if id_ in QUICK else skip)
            for id_, name, kwargs, channels in ids]


def with_batch_statistics(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Batch norm's running statistics set from x (one forward in training mode): with its initial statistics a
    deep random network's logits shrink to ~1e-13, which any exporter would match."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: after one batch, that batch's statistics
    with torch.no_grad():
        model.train()(x)
    return model.eval()


@pytest.mark.parametrize("name, kwargs, channels", registry_cases())
def test_every_registered_model_exports_to_onnx_and_runs_as_in_pytorch(name, kwargs, channels):
    """Random weights at the model's default size (its own, else the default dataset's 32 px)."""
    import onnxruntime as ort

    from imgcls_cli.data.inputs import InputSpec
    from imgcls_cli.export import onnx as onnx_files
    from imgcls_cli.export.trace import trace
    from imgcls_cli.export.verify import compare
    from imgcls_cli.models import create_model, input_size

    size = input_size(name, kwargs) or 32
    torch.manual_seed(0)
    x = torch.randn(4, channels, size, size, generator=torch.Generator().manual_seed(1))
    model = with_batch_statistics(create_model(name, num_classes=10, in_channels=channels, image_size=size, **kwargs),
                                  x)
    proto = onnx_files.convert(trace(model, InputSpec(channels, size, (0.5,) * channels, (0.25,) * channels), name),
                               18, name)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = x[:3]  # not the traced batch of 2
    with torch.no_grad():
        expected = model(x).numpy()
    logits = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(expected).max() > 1e-3  # logits that tell the classes apart, not a vanished signal
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    assert compare(expected, logits, expected.argmax(1)).max_abs_prob_diff <= 1e-4


# ------------------------------------------------------------------------------------------------- the docs' example
def docs_snippet() -> str:
    text = (ROOT / "docs" / "export.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)
    assert len(blocks) == 1, "docs/export.md shows one Python example"
    return blocks[0]


def test_the_docs_example_runs_the_onnx_file_with_onnx_runtime_alone(export_all, runs, tmp_path):
    import cv2
    from sklearn.datasets import load_digits

    from imgcls_cli.data.decode import decode_image
    from imgcls_cli.data.inputs import InputSpec

    snippet = docs_snippet()
    assert "imgcls_cli" not in snippet
    shutil.copy(export_all["dir"] / "simple_cnn.onnx", tmp_path / "model.onnx")
    digit = (load_digits().images[1000] * (255 / 16)).round().astype(np.uint8)  # 8 x 8: enlarged to 16 px
    assert cv2.imwrite(str(tmp_path / "digit.png"), digit)
    (tmp_path / "example.py").write_text(snippet)
    env = {k: v for k, v in cli_env().items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert len(rows) == 5
    ckpt, model = checkpoint_model(runs["best"])
    x = InputSpec.from_checkpoint(ckpt).normalize(torch.from_numpy(decode_image(tmp_path / "digit.png", 1, 16))[None])
    with torch.no_grad():
        probs = torch.softmax(model(x), 1)[0]
    top = torch.argsort(probs, descending=True)[:5]
    assert [r[0] for r in rows] == [str(ckpt["classes"][i]) for i in top]
    assert np.allclose([float(r[1]) for r in rows], probs[top].numpy(), atol=2e-4)


def test_the_docs_name_every_metadata_key():
    from imgcls_cli.export.metadata import KEYS, PREFIX

    text = (ROOT / "docs" / "export.md").read_text()
    assert [k for k in KEYS if f"`{PREFIX}{k}`" not in text] == []

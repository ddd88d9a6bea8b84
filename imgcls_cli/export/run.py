"""`imgcls export`: a checkpoint as ONNX (fp32, and int8 with quantize=int8) and/or a torch.export program (.pt2),
each checked against the checkpoint before it takes its name; export.json records every file and how well it agrees
with the checkpoint."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from imgcls_cli import console as out
from imgcls_cli.checkpoint import load_checkpoint
from imgcls_cli.data.inputs import InputSpec
from imgcls_cli.engine.inference import model_from_checkpoint
from imgcls_cli.export import metadata
from imgcls_cli.export import onnx as onnx_files
from imgcls_cli.export import pt2 as pt2_files
from imgcls_cli.export.images import Images, load_images
from imgcls_cli.export.trace import trace
from imgcls_cli.export.verify import (FP32_MAX_PROB_DIFF, FP32_TOP1_AGREEMENT, INT8_WARN_DROP, Agreement, check_fp32,
                                      compare, onnx_logits, pt2_logits, publish, torch_logits)
from imgcls_cli.rundir import versions, write_json
from imgcls_cli.specs.export import ExportSpec

log = logging.getLogger("imgcls")


@dataclass
class Job:
    """What every format's exporter works from: the checkpoint, its traced program, the images that check it."""

    spec: ExportSpec
    run_dir: Path
    ckpt: dict[str, Any]
    sha256: str
    name: str  # the registered model's name
    stem: str  # the files' name: <stem>.onnx, <stem>.int8.onnx, <stem>.pt2
    program: torch.export.ExportedProgram
    verify: Images
    calibration: Images | None
    reference: np.ndarray  # the checkpoint's fp32 PyTorch logits on verify.images

    def props(self, quantize: str = "none") -> dict[str, str]:
        return metadata.from_checkpoint(self.ckpt, self.spec.checkpoint, self.sha256, quantize)

    def entry(self, final: Path, fmt: str, quantize: str, agreement: Agreement, started: float,
              opset: int | None) -> dict[str, Any]:
        """export.json's record of one file."""
        return {"file": final.name, "path": str(final), "format": fmt, "quantize": quantize,
                "bytes": final.stat().st_size, "opset": opset, **agreement.as_dict(),
                "seconds": round(time.perf_counter() - started, 2)}


def file_stem(ckpt: dict[str, Any]) -> str:
    """The model's registered name; a torchvision model's is tv_<arch>."""
    model = ckpt["model"]
    if model["name"] == "tv" and model.get("kwargs", {}).get("arch"):
        return f"tv_{model['kwargs']['arch']}"
    return str(model["name"])


def export_onnx(job: Job) -> list[dict[str, Any]]:
    """<stem>.onnx (fp32, held to the fp32 tolerance) and with quantize=int8 <stem>.int8.onnx (its accuracy
    reported)."""
    started, opset = time.perf_counter(), job.spec.opset
    proto = onnx_files.convert(job.program, opset, job.name)
    onnx_files.set_metadata(proto, job.props())
    final = job.run_dir / f"{job.stem}.onnx"
    agreement = publish(final, lambda path: onnx_files.write(proto, path),
                        lambda path: check_fp32(_onnx_agreement(job, path, final.name), final.name))
    entries = [job.entry(final, "onnx", "none", agreement, started, opset)]
    _log_verified(entries[-1], job)
    if job.spec.quantize == "int8" and job.calibration is not None:
        from imgcls_cli.export.quantize import quantize

        started = time.perf_counter()
        log.info(f"quantizing to int8, calibrated on {len(job.calibration.labels)} training images")
        int8, kind = quantize(proto, job.calibration.numpy(), job.run_dir, job.name)
        onnx_files.set_metadata(int8, job.props(kind))
        final = job.run_dir / f"{job.stem}.int8.onnx"
        agreement = publish(final, lambda path: onnx_files.write(int8, path),
                            lambda path: _onnx_agreement(job, path, final.name))
        entries.append(job.entry(final, "onnx", kind, agreement, started, opset))
        _log_verified(entries[-1], job)
        drop = agreement.checkpoint_accuracy - agreement.accuracy
        if drop > INT8_WARN_DROP:
            log.warning(f"{final.name} loses {drop * 100:.1f} points of accuracy on {agreement.n_images} "
                        f"{job.verify.split} images ({agreement.checkpoint_accuracy:.4f} -> {agreement.accuracy:.4f})")
    return entries


def _onnx_agreement(job: Job, path: Path, name: str) -> Agreement:
    return compare(job.reference, onnx_logits(path, job.verify.numpy(), name), job.verify.labels)


def export_pt2(job: Job) -> list[dict[str, Any]]:
    """<stem>.pt2 (held to the fp32 tolerance) with its metadata inside and in <stem>.pt2.json beside it."""
    started, props = time.perf_counter(), job.props()
    final = job.run_dir / f"{job.stem}.pt2"
    agreement = publish(final, lambda path: pt2_files.write(job.program, path, props),
                        lambda path: check_fp32(compare(job.reference, pt2_logits(path, job.verify.images),
                                                        job.verify.labels), final.name))
    pt2_files.write_sidecar(final, props)
    entry = job.entry(final, "torch_export", "none", agreement, started, None)
    _log_verified(entry, job)
    return [entry]


EXPORTERS: dict[str, Callable[[Job], list[dict[str, Any]]]] = {"onnx": export_onnx, "torch_export": export_pt2}


def _log_verified(entry: dict[str, Any], job: Job) -> None:
    log.info(f"{entry['file']}: {entry['bytes']:,} bytes; on {entry['n_images']} {job.verify.split} images top-1 "
             f"agreement {entry['top1_agreement']:.4f}, max |prob difference| {entry['max_abs_prob_diff']:.2e}")


def prepare(spec: ExportSpec, run_dir: Path) -> Job:
    """Load and check the checkpoint, its images and its traced program (what every format starts from)."""
    if "onnx" in spec.formats:
        onnx_files.require()
    ckpt = load_checkpoint(spec.checkpoint)
    sha256 = metadata.sha256_file(spec.checkpoint)
    model = model_from_checkpoint(ckpt, torch.device("cpu")).float()
    name = str(ckpt["model"]["name"])
    verify, calibration = load_images(ckpt, spec.checkpoint,
                                      spec.calibration_samples if spec.quantize == "int8" else 0)
    reference = torch_logits(model, verify.images)
    log.info(f"tracing model '{name}' ({ckpt['input']['channels']}x{ckpt['input']['size']}x{ckpt['input']['size']} "
             "input, dynamic batch) with torch.export")
    program = trace(model, InputSpec.from_checkpoint(ckpt), name)
    return Job(spec, run_dir, ckpt, sha256, name, file_stem(ckpt), program, verify, calibration, reference)


def run_export(spec: ExportSpec, run_dir: str | Path) -> dict[str, Any]:
    """Every format the spec asks for, each verified, then placed; export.json lists the files that passed (it is
    rewritten after each, so that it never names a file that is not there)."""
    run_dir = Path(run_dir)
    job = prepare(spec, run_dir)
    report: dict[str, Any] = {
        "source": str(spec.checkpoint), "sha256": job.sha256, "model": job.name,
        "verified_on": {"dataset": job.verify.dataset, "split": job.verify.split,
                        "n_images": len(job.verify.labels)},
        "fp32_tolerance": {"top1_agreement": FP32_TOP1_AGREEMENT, "max_abs_prob_diff": FP32_MAX_PROB_DIFF},
        "versions": {**versions(), **_export_versions(spec)}, "files": [],
    }
    for fmt in spec.formats:
        for entry in EXPORTERS[fmt](job):
            report["files"].append(entry)
            write_json(run_dir / "export.json", report)
    _show(report, job)
    return report


def _export_versions(spec: ExportSpec) -> dict[str, str]:
    if "onnx" not in spec.formats:
        return {}
    import onnx
    import onnxruntime
    import onnxscript

    return {"onnx": onnx.__version__, "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__}


def _show(report: dict[str, Any], job: Job) -> None:
    rows = [[e["file"], e["format"] + ("" if e["quantize"] == "none" else f" {e['quantize']}"), _size(e["bytes"]),
             e["top1_agreement"], f"{e['max_abs_prob_diff']:.2e}", e["accuracy"], e["checkpoint_accuracy"]]
            for e in report["files"]]
    title = f"Exported {job.spec.checkpoint} (checked on {job.verify.dataset} {job.verify.split}, " \
            f"{len(job.verify.labels)} images)"
    out.show(out.table(title, ["file", "format", "size", "top-1 agreement", "max Δprob", "accuracy",
                               "checkpoint accuracy"], rows))


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"

"""imgcls check on real Fashion-MNIST images with planted problems: precision and recall of each kind of finding,
the time of the duplicate check of the 60,000 training images, and the label errors labels=true finds in the real
test split (docs/check_label_issues.png).

    python benchmarks/check.py [--train 6000] [--test 1000] [--skip-real]

1. A folder of class folders (train/, test/) of Fashion-MNIST images (PNG; every fifth one a JPEG at quality 95) with
   3% of the training images filed under a wrong class, 50 exact copies and 50 near copies (1 pixel cropped off each
   side, resized to 36x36, JPEG at quality 75) of training images, half in train/, half in test/. `imgcls check
   labels=true` runs on it with the recipe below (3 folds).
2. The duplicate check (read + hash + search) of the 60,000 training images, in this process.
3. `imgcls check dataset=fashion_mnist labels=true check.folds=2` with the same recipe: out-of-fold probabilities
   over train + test (each image scored by a model trained on the other half of the 70,000), and a figure of the
   24 highest-ranked label issues of the test split.
Budget on 2 busy CPU cores: about 7 minutes for 1, 1 for 2 and 8 for 3.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from machine import cpu_name  # noqa: E402

from imgcls_cli.data.builders import FASHION_CLASSES  # noqa: E402
from imgcls_cli.data.idx import load_idx_dataset  # noqa: E402

IDX = [Path.home() / ".cache/imgcls/data/FashionMNIST/raw", Path("/usr/share/datasets/fashion-mnist")]
# The fashion_mnist_fast recipe (resnet9 at a quarter of its width, SGD + one-cycle), fewer epochs.
RECIPE = ["model=resnet9", "model.widths=[16,32,64,128]", "optimizer=sgd", "optimizer.lr=0.2",
          "optimizer.nesterov=true", "schedule=onecycle", "batch_size=128", "label_smoothing=0.1"]
PLANTED_EPOCHS, REAL_EPOCHS = 4, 1  # 3 folds of 4,700 images; 2 folds of 35,000 images
NAMES = [c.replace("/", "-") for c in FASHION_CLASSES]  # folder names


def near_copy(image: np.ndarray) -> np.ndarray:
    """1 pixel cropped off each side, resized to 36x36, JPEG at quality 75."""
    resized = cv2.resize(image[1:-1, 1:-1], (36, 36), interpolation=cv2.INTER_LINEAR)
    ok, data = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, 75])
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def write(path: Path, image: np.ndarray, jpeg: bool = False) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jpeg:
        path = path.with_suffix(".jpg")
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    else:
        cv2.imwrite(str(path), image)
    return path.as_posix()


def build(root: Path, data: dict, n_train: int, n_test: int, seed: int = 0) -> dict:
    """The planted folder; what was planted, as paths relative to root."""
    rng = np.random.default_rng(seed)
    (tx, ty), (vx, vy) = data["train"], data["test"]
    train = rng.choice(len(ty), n_train, replace=False)
    test = rng.choice(len(vy), n_test, replace=False)
    flips = set(rng.choice(n_train, int(round(0.03 * n_train)), replace=False).tolist())
    planted = {"flips": set(), "exact": set(), "near": set()}
    paths = []
    for k, i in enumerate(train):
        label = int(ty[i]) if k not in flips else int((ty[i] + rng.integers(1, 10)) % 10)
        rel = write(root / "train" / NAMES[label] / f"{i}.png", tx[i, 0], jpeg=k % 5 == 4)
        paths.append((rel, label))
        if k in flips:
            planted["flips"].add(str(Path(rel).relative_to(root)))
    for k, i in enumerate(test):
        write(root / "test" / NAMES[int(vy[i])] / f"{i}.png", vx[i, 0], jpeg=k % 5 == 4)
    sources = rng.choice([k for k in range(n_train) if k not in flips], 100, replace=False)
    for n, k in enumerate(sources):
        rel, label = paths[k]
        split = "train" if n % 2 == 0 else "test"
        original = str(Path(rel).relative_to(root))
        if n < 50:
            copy = root / split / NAMES[label] / f"copy_{n}{Path(rel).suffix}"
            shutil.copy(rel, copy)
            planted["exact"].add(frozenset((original, str(copy.relative_to(root)))))
        else:
            copy = root / split / NAMES[label] / f"near_{n}.jpg"
            cv2.imwrite(str(copy), near_copy(cv2.imread(rel, cv2.IMREAD_GRAYSCALE)))
            planted["near"].add(frozenset((original, str(copy.relative_to(root)))))
    return planted


def imgcls_check(args: list[str], cwd: Path) -> tuple[Path, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "imgcls_cli", "check", *args], cwd=cwd, capture_output=True,
                          text=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"imgcls check failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1].split(": ", 1)[1]), time.perf_counter() - start


def score(found: set, planted: set) -> tuple[str, str, int, int]:
    hits = len(found & planted)
    precision = hits / len(found) if found else float("nan")
    return f"{precision:.1%}", f"{hits / len(planted):.1%}", len(found), len(planted)


def planted_run(data: dict, n_train: int, n_test: int, work: Path) -> list[list]:
    root = work / "planted"
    planted = build(root, data, n_train, n_test)
    run_dir, seconds = imgcls_check(["dataset=imagefolder", f"dataset.root={root}", "dataset.val_fraction=0",
                                     "dataset.image_size=28",
                                     "labels=true", "check.folds=3", *RECIPE, f"epochs={PLANTED_EPOCHS}"], work)
    with open(run_dir / "issues.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    pairs = {m: {frozenset((r["path"], r["related"])) for r in rows if r["match"] == m} for m in ("exact", "near")}
    ranked = [r["path"] for r in rows if r["kind"] == "label_issue"]  # most likely wrong first
    n = len(planted["flips"])
    table = [["exact duplicates", *score(pairs["exact"], planted["exact"])],
             ["near duplicates", *score(pairs["near"], planted["near"])],
             ["label flips (3%): every label_issue row", *score(set(ranked), planted["flips"])],
             [f"label flips (3%): the first {n} rows", *score(set(ranked[:n]), planted["flips"])]]
    print(f"planted: {n_train} train + {n_test} test images and the planted copies, checked in {seconds:.0f} s "
          f"(labels=true, 3 folds of {PLANTED_EPOCHS} epochs)")
    return table


def duplicate_timing(data: dict) -> dict:
    from imgcls_cli.check.duplicates import exact_groups, near_pairs
    from imgcls_cli.check.images import analyse

    images = list(data["train"][0])
    start = time.perf_counter()
    info = analyse(images, 0.04)
    read = time.perf_counter() - start
    groups = exact_groups(info.digest, info.readable)
    near = near_pairs(info.hashes, info.thumbs, info.readable, info.digest, 7, 0.995)
    total = time.perf_counter() - start
    return {"images": len(images), "hash_seconds": read, "search_seconds": total - read, "total_seconds": total,
            "exact_groups": len(groups), "near_pairs": len(near)}


def real_run(data: dict, work: Path, figure: Path) -> dict:
    run_dir, seconds = imgcls_check(["dataset=fashion_mnist", "labels=true", "check.folds=2", *RECIPE,
                                     f"epochs={REAL_EPOCHS}"], work)
    with open(run_dir / "issues.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    issues = [r for r in rows if r["kind"] == "label_issue"]
    test = [r for r in issues if r["index"].startswith("test/")]
    top_figure(test[:24], data["test"][0], figure)
    found = json.loads((run_dir / "check.json").read_text())["findings"]
    return {"seconds": seconds, "label_issues": len(issues), "test_issues": len(test), "findings": found,
            "top": [(r["index"], r["class"], r["suggested"], r["score"]) for r in test[:24]]}


def top_figure(rows: list[dict], images: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Three title lines above each image: room for them between the rows (constrained layout), none overlapping.
    fig, axes = plt.subplots(4, 6, figsize=(12, 11), layout="constrained")
    for ax, row in zip(axes.ravel(), rows):
        ax.imshow(images[int(row["index"].split("/")[1]), 0], cmap="gray")
        ax.set_title(f"{row['index']}\nlabel: {row['class']}\nlooks like: {row['suggested']} "
                     f"({float(row['score']):.3f})", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("Fashion-MNIST test split: the 24 likeliest label errors (imgcls check labels=true)")
    fig.savefig(path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--skip-real", action="store_true", help="only the planted folder and the timing")
    parser.add_argument("--figure", type=Path, default=HERE.parent / "docs" / "check_label_issues.png")
    args = parser.parse_args()
    data = load_idx_dataset(IDX)
    if data is None:
        raise SystemExit(f"Fashion-MNIST IDX files not found in {', '.join(map(str, IDX))}")
    print(f"machine: {cpu_name()}")
    with tempfile.TemporaryDirectory(prefix="imgcls-check-bench-") as scratch:
        work = Path(scratch)
        table = planted_run(data, args.train, args.test, work)
        print("| finding | precision | recall | found | planted |\n| --- | ---: | ---: | ---: | ---: |")
        print("\n".join("| " + " | ".join(map(str, row)) + " |" for row in table))
        timing = duplicate_timing(data)
        print(f"duplicate check of the {timing['images']} training images: {timing['total_seconds']:.1f} s "
              f"(read and hash {timing['hash_seconds']:.1f} s, search {timing['search_seconds']:.1f} s); "
              f"{timing['exact_groups']} groups of exact duplicates, {timing['near_pairs']} near pairs")
        if not args.skip_real:
            real = real_run(data, work, args.figure)
            print(f"real: imgcls check dataset=fashion_mnist labels=true check.folds=2 in {real['seconds']:.0f} s: "
                  f"{real['label_issues']} label issues ({real['test_issues']} in test), findings {real['findings']}")
            for row in real["top"]:
                print("  ", *row)


if __name__ == "__main__":
    main()

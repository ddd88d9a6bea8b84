"""Images that are not in memory: files decoded a batch at a time in DataLoader workers, arrays read and resized
per batch, and the decoded cache; they must give the very batches the in-memory path gives."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from imgcls_cli.data.augment import build_augment
from imgcls_cli.data.datasets import load_dataset
from imgcls_cli.data.files import decode_files
from imgcls_cli.data.loader import DeviceLoader, StreamLoader, make_loader
from imgcls_cli.data.stores import ArrayStore, FileStore, decoded_cache
from imgcls_cli.data.decode import list_images
from imgcls_cli.errors import UserError
from test_datasets import write_bad_files, write_tree

AUGMENT = {"name": "t", "hflip": {"p": 0.5}, "rotation": {"p": 0.5, "degrees": 15}, "brightness": {"p": 0.5}}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    write_tree(root, n=90)
    return root


def folder_cfg(root, **extra) -> dict:
    return {"name": "imagefolder", "root": str(root), "image_size": 16, "channels": 3, "val_fraction": 0.1,
            "test_fraction": 0.1, "max_train_samples": None, "max_eval_samples": None, **extra}


def all_batches(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_files_give_the_same_batches_as_memory(tree, workers):
    in_memory = load_dataset(folder_cfg(tree), seed=0)
    streamed = load_dataset(folder_cfg(tree, in_memory=False), seed=0)
    train, stream_train = in_memory.splits["train"], streamed.splits["train"]
    assert train.in_memory and not stream_train.in_memory and isinstance(stream_train.images, FileStore)
    assert stream_train.ids == train.ids
    args = dict(shuffle=True, drop_last=True, augment=build_augment(AUGMENT), seed=3)
    memory = DeviceLoader(train.images, train.labels, 16, in_memory.mean, in_memory.std, **args)
    stream = make_loader(stream_train.images, stream_train.labels, 16, in_memory.mean, in_memory.std,
                         device=torch.device("cpu"), num_workers=workers, **args)
    assert isinstance(stream, StreamLoader)
    for epoch in (1, 2):
        for (a, ya), (b, yb) in zip(all_batches(memory, epoch), all_batches(stream, epoch), strict=True):
            assert torch.equal(ya, yb) and torch.allclose(a, b, atol=1e-6)


FORKED_WORKERS_AFTER_OPENCV = """
import sys, numpy as np, torch, cv2
from imgcls_cli.data.datasets import load_dataset
from imgcls_cli.data.loader import make_loader
cfg = {"name": "imagefolder", "root": sys.argv[1], "image_size": 16, "channels": 3, "val_fraction": 0.1,
       "test_fraction": 0.1, "max_train_samples": None, "max_eval_samples": None, "in_memory": False}
bundle = load_dataset(cfg, seed=0)
cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (1500, 1500))  # work that would start OpenCV's thread pool
train = bundle.splits["train"]
loader = make_loader(train.images, train.labels, 16, bundle.mean, bundle.std, device=torch.device("cpu"),
                     num_workers=2)
print(sum(len(y) for _, y in loader), cv2.getNumThreads())
"""


def test_workers_forked_after_opencv_has_run_read_their_batches(tree):
    """OpenCV's thread pool does not survive a fork: a worker that touched it hung forever. It runs on one thread."""
    proc = subprocess.run([sys.executable, "-c", FORKED_WORKERS_AFTER_OPENCV, str(tree)], capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    batches, threads = proc.stdout.split()
    assert int(batches) > 0 and threads == "1"


def test_arrays_over_the_memory_budget_stream_resized_per_batch():
    cfg = {"name": "digits", "image_size": 24, "channels": 3, "val_fraction": 0.15, "test_fraction": 0.2,
           "max_train_samples": None, "max_eval_samples": None}
    memory = load_dataset(cfg, seed=0)
    budget = load_dataset({**cfg, "memory_budget_gb": 1e-6}, seed=0)  # 1 kB: nothing fits
    store = budget.splits["test"].images
    assert isinstance(store, ArrayStore) and len(store) == len(memory.splits["test"])
    images, ok = store.load(np.arange(len(store)))
    assert ok.all() and np.array_equal(images, memory.splits["test"].images.numpy())
    assert budget.mean == pytest.approx(memory.mean, abs=0.02)  # estimated on a sample when not in memory
    assert load_dataset({**cfg, "memory_budget_gb": 1e-6, "in_memory": True}, seed=0).splits["test"].in_memory


def test_bad_files_found_while_streaming_are_left_out_and_listed(tmp_path):
    write_tree(tmp_path, n=40)
    bad = write_bad_files(tmp_path / "digit 2")
    bundle = load_dataset(folder_cfg(tmp_path, in_memory=False, val_fraction=0.0, test_fraction=0.0), seed=0)
    train = bundle.splits["train"]
    assert len(train) == 43  # not known to be bad until read
    loader = make_loader(train.images, train.labels, 8, bundle.mean, bundle.std, device=torch.device("cpu"))
    seen = sum(len(y) for _, y in loader)
    assert seen == 40 and sorted(os.path.basename(p) for p in loader.skipped) == bad


def test_decoded_cache_is_built_once_and_rebuilt_when_a_file_changes(tmp_path, tree):
    paths = list_images(tree)
    array, bad, built = decoded_cache(paths, 3, 16, tmp_path / "cache")
    assert built and not bad and array.shape == (len(paths), 3, 16, 16)
    assert np.array_equal(np.asarray(array), decode_files(paths, 3, 16).images)
    _, _, built_again = decoded_cache(paths, 3, 16, tmp_path / "cache")
    assert not built_again
    os.utime(paths[0], ns=(1, 1))
    _, _, after_touch = decoded_cache(paths, 3, 16, tmp_path / "cache")
    assert after_touch
    assert not [p for p in (tmp_path / "cache").iterdir() if "partial" in p.name]


def test_cached_dataset_matches_the_decoded_one(tmp_path, tree):
    direct = load_dataset(folder_cfg(tree), seed=0)
    cached = load_dataset(folder_cfg(tree, cache=True, cache_dir=str(tmp_path)), seed=0)
    streamed = load_dataset(folder_cfg(tree, cache=True, cache_dir=str(tmp_path), in_memory=False), seed=0)
    assert torch.equal(cached.splits["train"].images, direct.splits["train"].images)
    store = streamed.splits["val"].images
    assert isinstance(store, ArrayStore)
    assert np.array_equal(store.load(np.arange(len(store)))[0], direct.splits["val"].images.numpy())


@pytest.mark.parametrize("key,value,message", [("in_memory", "maybe", "dataset.in_memory"),
                                               ("memory_budget_gb", 0, "dataset.memory_budget_gb"),
                                               ("cache", "yes", "dataset.cache")])
def test_placement_mistakes_are_user_errors(tree, key, value, message):
    with pytest.raises(UserError, match=message):
        load_dataset(folder_cfg(tree, **{key: value}), seed=0)

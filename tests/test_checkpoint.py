import os
import pickle

import pytest
import torch

from imgcls_cli.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from imgcls_cli.errors import UserError


KWARGS = {"widths": [4, 8], "hidden": 8, "num_classes": 2, "in_channels": 1, "image_size": 8}


def payload():
    from imgcls_cli.models import create_model

    torch.manual_seed(0)
    state = create_model("simple_cnn", **KWARGS).state_dict()
    return {"model": {"name": "simple_cnn", "kwargs": dict(KWARGS)}, "state_dict": state,
            "classes": ["a", "b"], "input": {"channels": 1, "size": 8, "mean": [0.5], "std": [0.2]},
            "config": {"epochs": 1}, "epoch": 1, "step": 4, "metrics": {"val_accuracy": 0.5}}


def test_round_trip_with_weights_only(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(payload(), path)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == 1
    ckpt = load_checkpoint(path)
    assert ckpt["classes"] == ["a", "b"]
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in payload()["state_dict"].items())
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(payload(), path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(UserError, match="cannot write checkpoint .*No space left on device"):
        save_checkpoint({**payload(), "epoch": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_an_unwritable_folder_is_a_user_error(tmp_path):
    target = tmp_path / "file_not_folder"
    target.write_text("x")
    with pytest.raises(UserError, match="cannot write checkpoint"):
        save_checkpoint(payload(), target / "last.pt")


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_a_malicious_pickle_is_refused_and_never_run(tmp_path, writer):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    obj = {"format": FORMAT, "format_version": 1, "x": Exploit(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert "not an imgcls checkpoint" in str(info.value) or "pickled Python objects" in str(info.value)
    assert not marker.exists()


def test_truncated_not_a_checkpoint_and_missing_files_are_refused(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(payload(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    for path, message in [(truncated, "truncated"), (other, "no 'imgcls-checkpoint' format marker"),
                          (text, "not a readable imgcls checkpoint|not an imgcls checkpoint"), (tmp_path / "missing.pt", "checkpoint not found")]:
        with pytest.raises(UserError, match=message):
            load_checkpoint(path)


def test_incomplete_and_future_checkpoints_are_refused(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"format": FORMAT, "format_version": 1, "model": {}}, path)
    with pytest.raises(UserError, match="incomplete imgcls checkpoint"):
        load_checkpoint(path)
    torch.save({**payload(), "format": FORMAT, "format_version": 99}, path)
    with pytest.raises(UserError, match="format version 99"):
        load_checkpoint(path)

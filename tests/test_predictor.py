"""The one inference path: InputSpec's normalization, the batched predict function, the eval/predict specs and the
core/worker rule."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from imgcls_cli.cores import resolve_workers, usable_cores
from imgcls_cli.data.inputs import InputSpec
from imgcls_cli.data.loader import DeviceLoader
from imgcls_cli.engine.predictor import predict
from imgcls_cli.errors import UserError
from imgcls_cli.models.heads import head_name
from imgcls_cli.specs.eval import EvalSpec
from imgcls_cli.specs.predict import PredictSpec

SPEC = InputSpec(3, 8, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()


def images(n: int = 10) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_the_loader_and_predict_normalize_an_image_bitwise_alike():
    """eval (the loader) and predict (uint8 files) give the model the very same floats for the same image."""
    x = images()
    loader = DeviceLoader(x, torch.zeros(len(x), dtype=torch.long), 4, list(SPEC.mean), list(SPEC.std))
    from_loader = torch.cat([b for b, _ in loader])
    assert torch.equal(from_loader, SPEC.normalize(x))
    expected = (x.float() / 255 - torch.tensor(SPEC.mean).view(1, 3, 1, 1)) / torch.tensor(SPEC.std).view(1, 3, 1, 1)
    assert torch.allclose(from_loader, expected, atol=1e-5)


def test_input_spec_is_the_checkpoints_input_entry():
    entry = {"channels": 3, "size": 8, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    assert InputSpec.from_checkpoint({"input": entry}) == SPEC and SPEC.as_dict() == entry


def test_teacher_conversion_restores_pixels_then_takes_the_other_normalization():
    x = SPEC.normalize(images(2))
    other = InputSpec(3, 16, (0.1, 0.1, 0.1), (0.5, 0.5, 0.5))
    converted = other.convert(x, SPEC)
    assert converted.shape == (2, 3, 16, 16)
    pixels = converted * 0.5 + 0.1
    assert pixels.min() > -1e-5 and pixels.max() < 1 + 1e-5  # back to 0-1 pixels, resized


def test_logits_are_the_models_outputs_and_probabilities_their_softmax():
    model, x = tiny_model(), SPEC.normalize(images())
    batches = [(x[:4], torch.arange(4)), (x[4:], torch.arange(4, 10))]
    logits = predict(model, batches, torch.no_grad, logits=True)
    with torch.no_grad():
        assert torch.equal(logits.outputs, torch.cat([model(x[:4]), model(x[4:])]))
    assert torch.equal(logits.targets, torch.arange(10))
    probs = predict(model, batches, torch.no_grad).outputs
    assert torch.allclose(probs, torch.softmax(logits.outputs, 1)) and torch.allclose(probs.sum(1), torch.ones(10))


def test_features_are_the_heads_input_of_the_images_themselves_with_tta():
    model, x = tiny_model(), SPEC.normalize(images())
    result = predict(model, [(x, None)], torch.no_grad, tta="hflip", head=head_name(model, 5))
    with torch.no_grad():
        expected = model[:4](x)
    assert result.features.shape == (10, 4) and torch.allclose(torch.from_numpy(result.features), expected)
    assert len(result.targets) == 0  # batches without targets


def test_no_batches_give_empty_outputs():
    result = predict(tiny_model(), [], torch.no_grad)
    assert result.outputs.numel() == 0 and result.targets.dtype == torch.int64


def test_workers_auto_is_cores_but_one_and_none_for_few_files():
    assert resolve_workers("auto") == max(1, min(8, usable_cores() - 1))
    assert resolve_workers("auto", items=10) == 0 and resolve_workers(3, items=10) == 3
    with pytest.raises(UserError, match="^num_workers must be a whole number >= 0, not -1"):
        resolve_workers(-1)


@pytest.mark.parametrize("keys,message", [
    ({"split": "dev"}, "split must be one of train, val, test, not 'dev'."),
    ({"ensemble": "stacking"}, "ensemble must be averaging or voting, not 'stacking'."),
    ({"tta": "vflip"}, "tta must be one of none, hflip, hflip_shift, not 'vflip'."),
    ({"features": "yes"}, "features must be true or false, not 'yes'."),
    ({"checkpoint": []}, "checkpoint= names no file; give a path, a list '[a.pt,b.pt]' or a glob."),
    ({"checkpoint": ["a.pt", "b.pt"], "features": True},
     "features=true writes one model's embeddings; checkpoint= names 2 files."),
])
def test_eval_keys_are_refused_in_one_line(keys, message):
    with pytest.raises(UserError) as err:
        EvalSpec.parse({"checkpoint": "a.pt", **keys})
    assert str(err.value) == message


def test_eval_spec_keeps_what_the_config_says():
    spec = EvalSpec.parse({"checkpoint": ["a.pt", "b.pt"], "batch_size": None, "topk": 3, "num_workers": 2,
                           "dataset": {"name": "digits"}}, ["test_fraction"])
    assert spec.checkpoints == ("a.pt", "b.pt") and spec.batch_size is None and spec.topk == 3
    assert spec.num_workers == 2 and spec.dataset_keys == ("test_fraction",) and spec.split == "test"
    assert EvalSpec.parse({"checkpoint": "???", "sweep": "outputs/sweep"}).checkpoints == ()


def test_predict_keys_are_refused_in_one_line():
    base = {"checkpoint": "a.pt", "inputs": "x"}
    with pytest.raises(UserError, match=r"^num_workers must be auto or a whole number >= 0, not -2\.$"):
        PredictSpec.parse({**base, "num_workers": -2})
    with pytest.raises(UserError, match="^topk must be a whole number >= 1, not 0"):
        PredictSpec.parse({**base, "topk": 0})
    assert PredictSpec.parse({**base, "output": ""}).output is None

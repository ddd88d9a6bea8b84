import pytest

from imgcls_cli.data.augment import AUGMENTS
from imgcls_cli.data.datasets import DATASETS
from imgcls_cli.errors import UserError
from imgcls_cli.models import MODELS
from imgcls_cli.optim import OPTIMIZERS
from imgcls_cli.registry import Registry, UnknownNameError
from imgcls_cli.schedule import SCHEDULES


def test_register_and_get():
    reg = Registry("widget")

    @reg.register("round")
    def make_round():
        return "round"

    assert reg.get("round")() == "round"
    assert reg.names() == ["round"] and "round" in reg and len(reg) == 1


def test_duplicate_name_is_refused():
    reg = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="already registered under the name 'a'"):
        reg.register("a")(lambda: 2)


def test_unknown_name_lists_close_matches_and_choices():
    with pytest.raises(UnknownNameError) as info:
        MODELS.get("resnt")
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert "unknown model 'resnt'" in message and "Did you mean resnet," in message
    choices = message.split("Choices: ", 1)[1].rstrip(".").split(", ")
    assert {"resnet", "simple_cnn", "vgg16"} <= set(choices) and choices == sorted(choices)
    assert "\n" not in message


def test_unknown_name_without_close_match_still_lists_choices():
    message = SCHEDULES.unknown_message("zzz")
    assert "Did you mean" not in message and "cosine" in message and "step" in message


@pytest.mark.parametrize("registry,required", [
    (MODELS, {"simple_cnn", "resnet"}),
    (DATASETS, {"digits", "synthetic"}),
    (OPTIMIZERS, {"adam", "sgd"}),
    (SCHEDULES, {"step", "cosine"}),
    (AUGMENTS, {"hflip", "rotation", "translate", "brightness", "contrast"}),
])
def test_minimum_components_are_registered(registry, required):
    assert required <= set(registry.names())


def test_every_augmentation_op_has_its_settings_checked_at_the_edge():
    """specs/augment.py checks the settings of exactly the ops data/augment builds, by the same names."""
    from imgcls_cli.specs.augment import OPS

    assert OPS.names() == AUGMENTS.names()

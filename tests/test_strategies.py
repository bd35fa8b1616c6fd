import pytest

from vptft.config import load_schema
from vptft.strategies import STRATEGIES, get_strategy
from vptft.strategies.heads import parameter_counts, tuned_parameters


def test_unknown_strategy_and_hparam_are_refused(mini_vit):
    with pytest.raises(KeyError, match="unknown strategy 'lorax'"):
        get_strategy("lorax")
    with pytest.raises(TypeError, match="no hyper-parameters"):
        get_strategy("full").build(mini_vit, 3, prompt_length=5)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_builds_and_declares_an_optimizer(mini_vit, name):
    spec = get_strategy(name)
    assert spec.optimizer in {"sgd", "adamw"}
    model = spec.build(mini_vit, 5)
    counts = parameter_counts(model)
    assert 0 < counts["tuned"] <= counts["total"]
    assert {"head.weight", "head.bias"} <= set(tuned_parameters(model))


def test_full_and_linear_tune_what_they_say(mini_vit):
    import copy

    full = get_strategy("full").build(copy.deepcopy(mini_vit), 5)
    assert parameter_counts(full)["tuned_pct"] == 100.0
    linear = get_strategy("linear").build(copy.deepcopy(mini_vit), 5)
    assert set(tuned_parameters(linear)) == {"head.weight", "head.bias"}
    assert parameter_counts(linear)["tuned"] == 96 * 5 + 5


@pytest.mark.parametrize("init", ["vpt", "zero"])
def test_head_init_options(mini_vit, init):
    import math

    head = get_strategy("linear").build(mini_vit, 5, head_init=init).head
    if init == "vpt":
        assert head.bias.eq(-math.log(99)).all() and head.weight.std() > 0.1  # kaiming fan_out: std sqrt(2/5)
    else:
        assert not head.weight.any() and not head.bias.any()
    with pytest.raises(ValueError, match="unknown head init"):
        get_strategy("linear").build(mini_vit, 5, head_init="xavier")


def test_schema_lists_every_head_init():
    from vptft.strategies.heads import HEAD_INITS

    assert tuple(load_schema()["properties"]["train"]["properties"]["head_init"]["enum"]) == HEAD_INITS

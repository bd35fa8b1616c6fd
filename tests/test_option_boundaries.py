"""The registry's config checks at their exact boundaries: what they accept, what they refuse, and that they
report every problem (before any job runs, so a config error never surfaces hours into a sweep)."""

import pytest

from vptft.strategies import (
    PROMPT_OPTIONS,
    STRATEGIES,
    Option,
    _depth_problems,
    _k,
    _prompt_problems,
    get_strategy,
)

PATH = "$.strategies.x"
BASE_GRID = {"lr": [0.1], "wd": [0.0]}


def test_an_option_accepts_its_maximum_and_refuses_what_lies_above():
    dropout = PROMPT_OPTIONS["prompt_dropout"]
    assert dropout.problem(1.0) is None and dropout.problem(0.0) is None
    assert dropout.problem(1.01) == "1.01 is above the maximum 1.0"


def test_bools_pass_only_as_bools():
    """True is an int to isinstance: numeric options must still refuse it, a bool option must take it."""
    assert PROMPT_OPTIONS["prompt_length"].problem(True) == "True is not of type int"
    assert PROMPT_OPTIONS["prompt_dropout"].problem(False) == "False is not of type float"
    flag = Option(bool, False)
    assert flag.problem(True) is None and flag.problem(False) is None
    assert flag.problem(1) == "1 is not of type bool"


@pytest.mark.parametrize(
    "values,ok",
    [
        ({"layers": "0:4"}, True),  # every block of a 4-block backbone
        ({"layers": "3:4"}, True),
        ({"layers": "2:2"}, False),  # empty
        ({"layers": "0:5"}, False),
        ({"location": "add", "pooling": "cls"}, True),
        ({"location": "prepend", "pooling": "prompt_pool"}, True),
        ({"location": "add", "pooling": "prompt_pool"}, False),
    ],
)
def test_prompt_combinations_at_their_boundaries(values, ok):
    errors = get_strategy("vpt_deep").problems(PATH, BASE_GRID, values, depth=4)
    assert (errors == []) is ok, errors


def test_prompt_combination_check_reads_missing_values_as_the_defaults():
    assert _prompt_problems({}, 4) == []


def test_the_last_k_blocks_may_be_all_of_them():
    problems = _depth_problems("k")
    assert problems({"k": 4}, 4) == [] and problems({}, 4) == []
    assert problems({"k": 5}, 4) == ["k 5 exceeds the backbone's 4 blocks"]
    assert get_strategy("partial").problems(PATH, {**BASE_GRID, "k": [1, 4]}, {}, depth=4) == []


@pytest.mark.parametrize(
    "name,option,default",
    [
        ("partial", "k", 1),
        ("mlp", "k", 2),
        ("adapter", "reduction", 8),
        ("sidetune", "side_width", 64),
        ("lora", "rank", 8),
    ],
)
def test_count_options_are_positive_integers(name, option, default):
    """The registry's options and a fresh `_k` one (the registry is built at import time, so only a call made
    here shows mutation testing a change in the helper)."""
    for opt, expected in ((STRATEGIES[name].options[option], default), (_k("n", 3, "h")["n"], 3)):
        assert opt.type is int and opt.default == expected and opt.help
        assert opt.problem(1) is None and opt.problem(expected) is None
        assert opt.problem(0) == "0 is below the minimum 1"
        assert opt.problem(True) is not None and opt.problem(2.0) is not None


def test_adapt_budget_may_equal_every_token():
    adapt = get_strategy("adapt")
    assert adapt.problems(PATH, BASE_GRID, {"target_length": 64, "context_length": 16}, depth=4) == []
    assert adapt.problems(PATH, BASE_GRID, {"target_length": 65, "context_length": 16}, depth=4) != []


def adapt_schedule(epochs, steps, **values):
    # 4 blocks x 4 tokens -> 6: 10 tokens, 5 a step: 2 pruning steps x 3 minibatches = 6 minibatches
    defaults = {
        "context_length": 4,
        "target_length": 6,
        "prune_tokens": 5,
        "prune_every": 3,
        "warmup_epochs": 0,
    }
    return get_strategy("adapt").schedule_problem({**defaults, **values}, epochs=epochs, steps=steps, depth=4)


def test_adapt_schedule_that_just_reaches_the_budget_is_accepted():
    assert adapt_schedule(epochs=1, steps=6) is None
    assert "= 6 minibatches after warm-up, but the run has about 5;" in adapt_schedule(epochs=1, steps=5)


def test_adapt_schedule_counts_whole_minibatches_after_warmup():
    # 10 steps over 3 epochs, 1 of warm-up: 20 // 3 = 6 minibatches after it
    assert adapt_schedule(epochs=3, steps=10, warmup_epochs=1) is None
    assert "takes 2 pruning steps" in adapt_schedule(epochs=3, steps=10, warmup_epochs=1, prune_every=4)
    assert "the run has about 6;" in adapt_schedule(epochs=3, steps=10, warmup_epochs=1, prune_every=4)
    # 3 tokens a step: ceil(10 / 3) = 4 steps
    assert "takes 4 pruning steps" in adapt_schedule(epochs=1, steps=6, prune_tokens=3)


def test_adapt_schedule_with_warmup_to_the_end_leaves_no_time_to_prune():
    assert "the run has about 0;" in adapt_schedule(epochs=2, steps=1000, warmup_epochs=2, prune_every=1)
    assert "the run has about 0;" in adapt_schedule(epochs=2, steps=1000, warmup_epochs=5, prune_every=1)
    assert adapt_schedule(epochs=2, steps=1000, warmup_epochs=2, target_length=16) is None  # nothing to prune


def test_every_unknown_key_is_reported_with_what_the_strategy_takes():
    assert get_strategy("full").problems(PATH, {**BASE_GRID, "k": [1]}, {"rank": 2, "depth": 3}) == [
        f"{PATH}.grid.k: 'full' has no hyper-parameter 'k' (allowed: none)",
        f"{PATH}.options.rank: 'full' has no hyper-parameter 'rank' (allowed: none)",
        f"{PATH}.options.depth: 'full' has no hyper-parameter 'depth' (allowed: none)",
    ]
    assert get_strategy("lora").problems(PATH, BASE_GRID, {"k": 1}) == [
        f"{PATH}.options.k: 'lora' has no hyper-parameter 'k' (allowed: alpha, rank)"
    ]


def test_lr_and_wd_belong_in_the_grid_only():
    assert get_strategy("full").problems(PATH, {"lr": [0.1]}, {"wd": 0.0}) == [
        f"{PATH}.options.wd: 'full' has no hyper-parameter 'wd' (allowed: none)"
    ]


def test_combinations_are_checked_only_for_a_valid_grid_and_a_known_depth():
    vpt = get_strategy("vpt_deep")
    grid = {**BASE_GRID, "layers": ["9:10"], "prompt_length": [0]}
    assert vpt.problems(PATH, grid, {}, depth=4) == [
        f"{PATH}.grid.prompt_length[0]: 0 is below the minimum 1"
    ]
    assert vpt.problems(PATH, {**BASE_GRID, "layers": ["1:3", "2:9"]}, {}) == []  # no depth: no range check


def test_a_combination_problem_names_its_grid_point():
    grid = {**BASE_GRID, "layers": ["3:1"], "prompt_length": [2]}
    assert get_strategy("vpt_deep").problems(PATH, grid, {}, depth=4) == [
        (
            f"{PATH}: layers '3:1' is not a non-empty block range of a 4-block backbone "
            "(grid point layers='3:1', prompt_length=2)"
        )
    ]

"""Linear heads of a grid trained in lockstep (vptft.head_grid): the same results as `engine.fit` point by point
in every field the sweep reads, and the same refusals where the stacked SGD could not be the per-point one.

Features here are random class clusters passed as the feature cache, so no backbone pass runs."""

import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import spy_autocast
from vptft import engine, head_grid
from vptft.data import SplitData
from vptft.strategies import get_strategy

D, C = 96, 4
CPU = torch.device("cpu")
INPUT = {"size": (32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3}


def features(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % C
    centres = torch.randn(C, D, generator=torch.Generator().manual_seed(99))
    return SplitData(centres[labels] + torch.randn(n, D, generator=g), labels)


def linear_models(backbone, n):
    models = []
    for _ in range(n):
        torch.manual_seed(0)
        models.append(get_strategy("linear").build(backbone, C, head_init="vpt"))
    return models


def config(lr=1.0, wd=0.0, **kw):
    fields = dict(epochs=3, warmup_epochs=1, batch_size=8, seed=1, optimizer_behavior="vpt_code")
    return engine.FitConfig("sgd", lr=lr, weight_decay=wd, **{**fields, **kw})


def stacked_sgd(models, cfgs):
    weight = torch.stack([m.head.weight.detach() for m in models]).requires_grad_()
    bias = torch.stack([m.head.bias.detach() for m in models]).requires_grad_()
    return head_grid.StackedSGD(models, cfgs, weight, bias)


def test_stacked_logits_are_each_heads_own_linear_layer():
    g = torch.Generator().manual_seed(0)
    weight, bias, x = torch.randn(3, C, D, generator=g), torch.randn(3, C, generator=g), torch.randn(5, D)
    expected = torch.stack([F.linear(x, w, b) for w, b in zip(weight, bias)])
    torch.testing.assert_close(head_grid._logits(weight, bias, x), expected)


def fit_alone(model, cfg, train, test):
    """engine.fit of one head on cached features: what the lockstep results must equal."""
    cache = {"train": train, "test": test}
    return engine.fit(model, train, {"test": test}, cfg, INPUT, CPU, cache_features=True, feature_cache=cache)


def test_lockstep_results_and_trained_heads_match_engine_fit(mini_vit):
    """Beyond the curves: the fields the sweep and the final runs read, and the heads each model keeps."""
    cfgs = [config(0.5, 0.0, eval_epochs={0, 2}), config(2.0, 0.01, eval_epochs={0, 2})]
    train, test = features(32, 0), features(16, 1)
    alone_models, together_models = linear_models(mini_vit, 2), linear_models(mini_vit, 2)
    initial_bias = together_models[0].head.bias.detach().clone()
    alone = [fit_alone(model, cfg, train, test) for model, cfg in zip(alone_models, cfgs)]
    together = head_grid.fit_heads(together_models, cfgs, train, {"test": test}, CPU)
    for a, b, model_a, model_b in zip(alone, together, alone_models, together_models):
        assert b["epochs"] == a["epochs"] == 3
        assert b["checkpoints"] == a["checkpoints"] == 0
        assert b["checkpoint_bytes"] == a["checkpoint_bytes"] == 0
        assert b["final"].keys() == a["final"].keys() == {"test"}
        for key in ("loss", "top1"):
            assert b["train"][key] == pytest.approx(a["train"][key], rel=1e-4)
            assert b["final"]["test"][key] == pytest.approx(a["final"]["test"][key], rel=1e-4)
        assert b["train"]["loss"] == b["curves"][-1]["train_loss"]
        assert b["final"]["test"]["loss"] == b["curves"][-1]["test_loss"]
        assert not torch.equal(model_b.head.bias, initial_bias)  # trained, and copied back
        torch.testing.assert_close(model_b.head.weight, model_a.head.weight, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model_b.head.bias, model_a.head.bias, rtol=1e-4, atol=1e-5)


def test_lockstep_of_zero_epochs_returns_what_engine_fit_returns(mini_vit):
    cfg = config(epochs=0, warmup_epochs=0)
    train, test = features(16, 0), features(8, 1)
    (alone,) = [fit_alone(m, cfg, train, test) for m in linear_models(mini_vit, 1)]
    together = head_grid.fit_heads(linear_models(mini_vit, 2), [cfg, cfg], train, {"test": test}, CPU)
    for result in together:
        assert {k: v for k, v in result.items() if k != "seconds"} == {
            k: v for k, v in alone.items() if k != "seconds"
        }


def test_lockstep_seconds_are_the_wall_time_shared_by_the_points(mini_vit, monkeypatch):
    clock = iter([100.0, 106.0])
    monkeypatch.setattr(head_grid, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    cfgs = [config(lr) for lr in (0.5, 1.0, 2.0)]
    results = head_grid.fit_heads(linear_models(mini_vit, 3), cfgs, features(16, 0), {}, CPU)
    assert [r["seconds"] for r in results] == [2.0, 2.0, 2.0]


def test_lockstep_evaluates_only_at_the_eval_epochs(mini_vit, monkeypatch):
    calls = []
    real = head_grid._evaluate
    monkeypatch.setattr(head_grid, "_evaluate", lambda *args: calls.append(args) or real(*args))
    cfgs = [config(lr, eval_epochs={1}) for lr in (0.5, 2.0)]
    evals = {"val": features(8, 1), "test": features(8, 2)}
    results = head_grid.fit_heads(linear_models(mini_vit, 2), cfgs, features(16, 0), evals, CPU)
    assert len(calls) == 2  # one pass over each eval set, at epoch 1 only
    assert [sorted(k for k in row if k.startswith("val")) for row in results[0]["curves"]] == [
        [],
        ["val_loss", "val_top1"],
        [],
    ]


def test_lockstep_trains_and_evaluates_at_the_configured_precision(mini_vit, monkeypatch):
    """bf16 is an autocast on CUDA (a no-op on the CPU): every forward must ask for it, train and eval."""
    precisions = spy_autocast(monkeypatch, head_grid)
    cfgs = [config(lr, precision="bf16") for lr in (0.5, 2.0)]
    head_grid.fit_heads(linear_models(mini_vit, 2), cfgs, features(16, 0), {"val": features(8, 1)}, CPU)
    assert len(precisions) == 3 * 2 + 3 and set(precisions) == {"bf16"}  # 2 batches and 1 eval an epoch


def test_one_head_is_not_a_grid():
    assert not head_grid.can_stack([nn.Linear(8, 3)], [config()])
    assert head_grid.can_stack([nn.Linear(8, 3), nn.Linear(8, 3)], [config(), config(lr=2.0)])


@pytest.mark.parametrize(
    "optimizer,name",
    [
        (lambda params: torch.optim.AdamW(params), "AdamW"),
        (lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True), "SGD"),
        (lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, dampening=0.1), "SGD"),
    ],
    ids=["adamw", "nesterov", "dampening"],
)
def test_stacked_sgd_refuses_an_optimiser_it_does_not_reproduce(mini_vit, monkeypatch, optimizer, name):
    models = linear_models(mini_vit, 2)
    monkeypatch.setattr(head_grid, "make_optimizer", lambda model, cfg: optimizer(model.head.parameters()))
    with pytest.raises(ValueError, match=f"^{name}: only plain momentum SGD heads train in lockstep"):
        stacked_sgd(models, [config(), config()])


def test_stacked_sgd_refuses_models_that_train_more_than_their_head(mini_vit):
    models = linear_models(mini_vit, 2)
    models[1].backbone.norm.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="only the head may train"):
        stacked_sgd(models, [config(), config()])


def test_stacked_sgd_refuses_a_grid_of_different_momenta(mini_vit):
    models = linear_models(mini_vit, 3)
    with pytest.raises(ValueError, match=r"one momentum for the whole grid, not \[0.5, 0.9\]"):
        stacked_sgd(models, [config(momentum=0.9), config(momentum=0.5), config(momentum=0.9)])
    assert stacked_sgd(models, [config(momentum=0.5)] * 3).momentum == 0.5


def test_stacked_evaluation_is_each_heads_own_over_several_batches(monkeypatch):
    """Loss and top-1 of every head summed over batches (3, 3 and 1 images here), and over one image."""
    monkeypatch.setattr(head_grid, "EVAL_BATCH", 3)
    monkeypatch.setattr(engine, "EVAL_BATCH", 3)
    torch.manual_seed(0)
    weight, bias = torch.randn(2, 4, 5), torch.randn(2, 4)
    data = SplitData(torch.randn(7, 5), torch.tensor([0, 1, 2, 3, 0, 1, 2]))
    for subset in (data, SplitData(data.images[:1], data.labels[:1])):
        stacked = head_grid._evaluate(weight, bias, subset, torch.device("cpu"), "fp32")
        for g, got in enumerate(stacked):
            head = lambda x, g=g: x @ weight[g].T + bias[g]
            want = engine.evaluate(head, subset, lambda x: x, torch.device("cpu"), "fp32")
            assert got["top1"] == pytest.approx(want["top1"]) and got["loss"] == pytest.approx(want["loss"])

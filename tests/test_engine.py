import itertools
import math

import pytest
import torch

from vptft import engine
from vptft.data import SplitData
from vptft.selection import grid_points, select
from vptft.strategies import get_strategy


def test_schedule_warmup_and_last_epoch():
    total, warmup = 100, 10
    assert engine.lr_factor(0, warmup, total) == 0.0
    assert engine.lr_factor(5, warmup, total) == pytest.approx(0.5)
    assert engine.lr_factor(warmup, warmup, total) == pytest.approx(1.0)  # warm-up end: the full lr
    last = engine.lr_factor(total - 1, warmup, total)
    assert last == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert 0 < last < 1e-3
    factors = [engine.lr_factor(e, warmup, total) for e in range(warmup, total)]
    assert all(a >= b for a, b in itertools.pairwise(factors))  # cosine decays monotonically


def test_lr_is_scaled_by_batch_over_256():
    cfg = engine.FitConfig("sgd", lr=0.4, weight_decay=0, epochs=1, warmup_epochs=0, batch_size=64, seed=0)
    assert cfg.scaled_lr == pytest.approx(0.1)
    cfg.lr_scale_batch = None
    assert cfg.scaled_lr == pytest.approx(0.4)


def test_epochs_floor_and_eval_epochs():
    assert engine.epochs_for(160, 64, 12, 150) == 50
    assert engine.epochs_for(800, 64, 12, 150) == 12
    assert engine.epochs_for(800, 64, 100, 0) == 100
    points = engine.eval_epochs(50, 10)
    assert 49 in points and 0 in points and len(points) == 10
    assert engine.eval_epochs(5, 10) is None


def test_selection_uses_val_top1_and_breaks_ties_with_smaller_lr():
    rows = [
        {"grid_index": 0, "lr": 0.5, "val_top1": 80.0},
        {"grid_index": 1, "lr": 0.1, "val_top1": 80.0},
        {"grid_index": 2, "lr": 0.05, "val_top1": 79.0},
    ]
    assert select(rows)["lr"] == 0.1
    rows.append({"grid_index": 3, "lr": 1.0, "val_top1": 81.0})
    assert select(rows)["lr"] == 1.0


def test_grid_points_put_lr_and_wd_first():
    points = grid_points({"prompt_length": [1, 5], "lr": [0.1, 0.2], "wd": [0.0]})
    assert len(points) == 4 and list(points[0]) == ["lr", "wd", "prompt_length"]


def _toy_data(n=64, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 60, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    for c in range(classes):  # a bright quadrant per class: learnable in a few steps
        images[labels == c, :, (c // 2) * 16 : (c // 2) * 16 + 16, (c % 2) * 16 : (c % 2) * 16 + 16] += 150
    return SplitData(images, labels)


INPUT = {"size": (32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3}


@pytest.mark.parametrize("strategy,lr", [("full", 4e-3), ("vpt_deep", 2.0), ("linear", 2.0)])
def test_fit_lowers_training_loss(mini_vit, strategy, lr):
    spec = get_strategy(strategy)
    model = spec.build(mini_vit, 4, **({"prompt_length": 2} if "vpt" in strategy else {}))
    cfg = engine.FitConfig(
        spec.optimizer, lr=lr, weight_decay=0.0, epochs=8, warmup_epochs=1, batch_size=16, seed=0
    )
    result = engine.fit(
        model,
        _toy_data(),
        {"test": _toy_data(seed=1)},
        cfg,
        INPUT,
        torch.device("cpu"),
        cache_features=spec.cache_features,
    )
    losses = [row["train_loss"] for row in result["curves"]]
    assert len(losses) == 8 and losses[-1] < losses[1]
    assert set(result["curves"][-1]) >= {"epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1"}


def test_cached_linear_features_match_the_uncached_path(mini_vit):
    import copy

    spec = get_strategy("linear")
    cfg = engine.FitConfig("sgd", lr=1.0, weight_decay=0.0, epochs=3, warmup_epochs=1, batch_size=16, seed=0)
    results = []
    for cache in (True, False):
        torch.manual_seed(0)
        model = spec.build(copy.deepcopy(mini_vit), 4)
        results.append(
            engine.fit(
                model,
                _toy_data(),
                {"test": _toy_data(seed=1)},
                cfg,
                INPUT,
                torch.device("cpu"),
                cache_features=cache,
            )
        )
    for a, b in zip(*(r["curves"] for r in results)):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["test_top1"] == pytest.approx(b["test_top1"])


def test_interrupted_run_resumes_from_checkpoint_to_identical_curves(mini_vit, tmp_path, monkeypatch):
    import copy

    spec = get_strategy("vpt_deep")

    def run(checkpoint):
        torch.manual_seed(0)
        model = spec.build(copy.deepcopy(mini_vit), 4, prompt_length=2)
        model.prompt_dropout.p = 0.1  # dropout draws from the global RNG: resume must restore it
        cfg = engine.FitConfig(
            "sgd", lr=1.0, weight_decay=1e-4, epochs=4, warmup_epochs=1, batch_size=16, seed=3
        )
        return engine.fit(
            model,
            _toy_data(),
            {"test": _toy_data(seed=1)},
            cfg,
            INPUT,
            torch.device("cpu"),
            checkpoint=checkpoint,
        )

    straight = run(None)
    checkpoint = tmp_path / "ckpt.pt"
    real_factor = engine.lr_factor

    def crash_at_epoch_2(epoch, *args):
        if epoch == 2:
            raise KeyboardInterrupt("killed")
        return real_factor(epoch, *args)

    monkeypatch.setattr(engine, "lr_factor", crash_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint)
    assert torch.load(checkpoint, weights_only=True)["next_epoch"] == 2  # epochs 0 and 1 were saved
    monkeypatch.setattr(engine, "lr_factor", real_factor)
    resumed = run(checkpoint)
    assert resumed["curves"] == straight["curves"]


@pytest.mark.parametrize("behavior", ["vpt_code", "plain"])
def test_linear_grid_in_lockstep_matches_one_point_after_another(mini_vit, behavior):
    """The sweep trains linear heads of a grid together (head_grid): same curves as engine.fit point by point,
    each point with its own lr, decay and momentum (the VPT code's rules leave the classifier bias undecayed)."""
    import copy

    from vptft import head_grid

    spec = get_strategy("linear")
    points = grid_points({"lr": [0.5, 2.0, 8.0], "wd": [0.0, 0.01]})
    cfgs = [
        engine.FitConfig(
            "sgd",
            lr=p["lr"],
            weight_decay=p["wd"],
            epochs=4,
            warmup_epochs=1,
            batch_size=16,
            seed=2,
            eval_epochs={1, 3},
            optimizer_behavior=behavior,
        )
        for p in points
    ]
    train, test = _toy_data(), _toy_data(seed=1)

    def models(backbone):
        built = []
        for _ in points:
            torch.manual_seed(0)
            built.append(spec.build(backbone, 4, head_init="vpt"))
        return built

    alone = [
        engine.fit(model, train, {"test": test}, cfg, INPUT, torch.device("cpu"), cache_features=True)
        for model, cfg in zip(models(mini_vit), cfgs)
    ]
    shared = models(copy.deepcopy(mini_vit))
    features = engine.cached_features(
        shared[0], {"train": train, "test": test}, None, INPUT, torch.device("cpu")
    )
    together = head_grid.fit_heads(
        shared, cfgs, features["train"], {"test": features["test"]}, torch.device("cpu")
    )
    assert len({round(r["final"]["test"]["loss"], 3) for r in alone}) == len(points)  # the points differ
    for a, b in zip(alone, together):
        assert [set(row) for row in a["curves"]] == [set(row) for row in b["curves"]]
        for row_a, row_b in zip(a["curves"], b["curves"]):
            assert row_b == pytest.approx(row_a, rel=1e-4, abs=1e-6)


def test_lockstep_refuses_heads_of_different_schedules(mini_vit):
    from vptft import head_grid

    heads = [torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)]
    cfg = engine.FitConfig("sgd", lr=1.0, weight_decay=0.0, epochs=3, warmup_epochs=1, batch_size=16, seed=0)
    assert head_grid.can_stack(heads, [cfg, cfg])
    other = engine.FitConfig(
        "sgd", lr=1.0, weight_decay=0.0, epochs=4, warmup_epochs=1, batch_size=16, seed=0
    )
    assert not head_grid.can_stack(heads, [cfg, other])
    assert not head_grid.can_stack([heads[0], torch.nn.Sequential(heads[1])], [cfg, cfg])
    adamw = engine.FitConfig(
        "adamw", lr=1.0, weight_decay=0.0, epochs=3, warmup_epochs=1, batch_size=16, seed=0
    )
    assert not head_grid.can_stack(heads, [adamw, adamw])


def test_precision_switches_tf32_on_cuda_only_and_refuses_unknown_values():
    before = torch.backends.cuda.matmul.allow_tf32
    engine.set_precision(torch.device("cpu"), "tf32")  # the CPU computes in fp32 whatever the switch
    assert torch.backends.cuda.matmul.allow_tf32 == before
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        engine.set_precision(torch.device("cpu"), "fp16")

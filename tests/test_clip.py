"""CLIP as a backbone family: a checkpoint in open_clip's layout loads as a timm image tower + open_clip's text
tower and reproduces open_clip's own features; CLIP's image-text head, zero-shot / CoOp / text prompts; Adapt's
pruning across both towers; the refusals before any job."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vptft.backbones import BACKBONES, family_problem
from vptft.backbones.checkpoints import LayoutError
from vptft.backbones.clip import open_clip_model
from vptft.backbones.factory import create_backbone
from vptft.strategies import get_strategy
from vptft.strategies.base import parameter_counts, tuned_parameters

MINI = BACKBONES["mini_clip"]
NAMES = ["circle", "ring", "l_shape"]
CLASS_TEXTS = (NAMES, "a photo of a {}.")


def _open_clip(seed=0):
    torch.manual_seed(seed)
    return open_clip_model(MINI.clip, MINI.preprocessing.size, MINI.depth, MINI.dim).eval()


def _write(clip, path, fmt="safetensors"):
    state = {k: v.contiguous() for k, v in clip.state_dict().items()}
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    clip = _open_clip()
    return clip, _write(clip, tmp_path_factory.mktemp("clip") / "open_clip_model.safetensors")


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_an_open_clip_file_loads_both_towers_and_reproduces_open_clips_features(tmp_path, fmt):
    clip = _open_clip(seed=3)
    path = _write(clip, tmp_path / f"open_clip_pytorch_model.{fmt}", fmt)
    backbone = create_backbone("mini_clip", path).eval()
    images = torch.randn(4, 3, 32, 32)
    tokens = backbone.clip_text.tokenize(["a photo of a circle.", "a ring.", "an l shape"])
    with torch.no_grad():
        pooled = backbone.forward_head(backbone.forward_features(images), pre_logits=True)
        torch.testing.assert_close(
            backbone.clip_text.project_image(pooled), clip.encode_image(images), rtol=0, atol=1e-5
        )
        torch.testing.assert_close(
            backbone.clip_text.encode(tokens), clip.encode_text(tokens), rtol=0, atol=1e-5
        )
        assert float(backbone.clip_text.logit_scale) == pytest.approx(float(clip.logit_scale))


def test_a_file_of_another_layout_or_shape_is_refused_naming_it(tmp_path):
    state = _open_clip().state_dict()
    no_text = {k: v.contiguous() for k, v in state.items() if not k.startswith("token_embedding")}
    save_file(no_text, str(tmp_path / "a.safetensors"))
    with pytest.raises(LayoutError, match=r"a\.safetensors: not an open_clip CLIP checkpoint"):
        create_backbone("mini_clip", tmp_path / "a.safetensors")
    wider = {k: v.contiguous() for k, v in state.items()}
    wider["text_projection"] = torch.zeros(64, 32)
    save_file(wider, str(tmp_path / "b.safetensors"))
    with pytest.raises(LayoutError, match=r"b\.safetensors: .*shape differs \['text_projection'\]"):
        create_backbone("mini_clip", tmp_path / "b.safetensors")


def test_the_paper_clip_needs_its_local_file_and_names_where_to_get_it():
    with pytest.raises(ValueError, match="open_clip_model.safetensors"):
        create_backbone("clip_b16_openai")


def test_text_kv_prompts_that_are_all_masked_change_nothing_and_kept_ones_do(clip_file):
    _, path = clip_file
    text = create_backbone("mini_clip", path).clip_text.eval()
    tokens = text.tokenize(["a photo of a circle.", "a ring."])
    prefixes = [torch.randn(3, text.width) for _ in text.blocks]
    with torch.no_grad():
        plain = text.encode(tokens)
        none_kept = text.encode(tokens, prefixes=prefixes, keep=[torch.zeros(3, dtype=torch.bool)] * 2)
        kept = text.encode(tokens, prefixes=prefixes, keep=[torch.ones(3, dtype=torch.bool)] * 2)
    torch.testing.assert_close(none_kept, plain, rtol=0, atol=1e-6)
    assert (kept - plain).abs().max() > 1e-3


def test_a_text_longer_than_the_context_is_refused(clip_file):
    _, path = clip_file
    text = create_backbone("mini_clip", path).clip_text
    with pytest.raises(ValueError, match="does not fit CLIP's 16-token"):
        text.tokenize(["a photo of a " + "very " * 20 + "long shape."])


def _build(path, strategy, **values):
    torch.manual_seed(0)
    return get_strategy(strategy).build(
        create_backbone("mini_clip", path), 3, head_init="zero", class_texts=CLASS_TEXTS, **values
    )


def test_zero_shot_is_clips_matching_of_the_class_captions_and_trains_nothing(clip_file):
    clip, path = clip_file
    model = _build(path, "zero_shot").eval()
    assert not tuned_parameters(model)
    images = torch.randn(5, 3, 32, 32)
    captions = ["a photo of a circle.", "a photo of a ring.", "a photo of a l shape."]
    with torch.no_grad():
        image = F.normalize(clip.encode_image(images), dim=-1)
        text = F.normalize(clip.encode_text(model.head.text.tokenize(captions)), dim=-1)
        expected = clip.logit_scale.exp() * image @ text.T
        torch.testing.assert_close(model(images), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("strategy", "values", "tuned"),
    [
        ("coop", {"n_ctx": 4}, {"head.context": 4 * 64}),
        ("vpt_deep", {"head": "text", "prompt_length": 2}, {"prompts": 4 * 2 * 96}),
        ("vpt_prefix", {"head": "text", "towers": "text", "prompt_length": 3}, {"text_prompts": 2 * 3 * 64}),
        (
            "adapt",
            {"head": "text", "towers": "both", "context_length": 4, "target_length": 8},
            {"prompts": 4 * 4 * 96, "text_prompts": 2 * 4 * 64},
        ),
    ],
)
def test_clip_prompt_strategies_train_exactly_their_prompts(clip_file, strategy, values, tuned):
    _, path = clip_file
    model = _build(path, strategy, **values)
    got = {name: p.numel() for name, p in tuned_parameters(model).items() if p.numel()}
    assert got == tuned
    loss = F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in tuned_parameters(model).values() if p.numel()
    )


def test_a_linear_head_on_clip_leaves_the_text_tower_out_of_the_model(clip_file):
    _, path = clip_file
    model = _build(path, "linear")
    assert model.backbone.clip_text is None
    counts = parameter_counts(model)
    assert counts["tuned"] == 96 * 3 + 3
    assert (
        counts["total"]
        == sum(p.numel() for p in create_backbone("mini_clip", path).parameters())
        - sum(p.numel() for p in create_backbone("mini_clip", path).clip_text.parameters())
        + counts["tuned"]
    )


def test_adapts_pruning_across_both_towers_ends_at_the_budget_with_its_history(clip_file):
    _, path = clip_file
    target = 10
    model = _build(
        path,
        "adapt",
        head="text",
        towers="both",
        context_length=4,
        target_length=target,
        prune_every=2,
        prune_tokens=3,
        warmup_epochs=1,
    )
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    optimizer = torch.optim.SGD(list(tuned_parameters(model).values()), lr=0.5)
    for epoch in range(4):
        for _ in range(4):
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            model.after_backward(epoch)
            optimizer.step()
    summary = model.summary()
    assert summary["active_tokens"] == target and summary["target_reached"]
    assert sum(summary["context_lengths"]) + sum(summary["text_context_lengths"]) == target
    history = (
        torch.tensor(summary["pruned_epoch"]).flatten().tolist()
        + torch.tensor(summary["text_pruned_epoch"]).flatten().tolist()
    )
    assert sum(e >= 0 for e in history) == 4 * 4 + 2 * 4 - target
    assert min(e for e in history if e >= 0) >= 1  # nothing pruned during the warm-up epoch
    assert model.stored_parameters() == (
        sum(summary["context_lengths"]) * 96 + sum(summary["text_context_lengths"]) * 64
    )


def test_a_prune_step_ranks_the_two_towers_together():
    """Global ranking (Adapt's Algorithm 1): the lowest scores go, whichever tower holds them."""
    from vptft.strategies.kv_prompts import AdaptModel

    torch.manual_seed(0)
    backbone = create_backbone("mini_clip", pretrained=False)
    model = get_strategy("adapt").build(
        backbone,
        3,
        head_init="zero",
        class_texts=CLASS_TEXTS,
        head="text",
        towers="both",
        context_length=2,
        target_length=4,
        prune_tokens=3,
    )
    assert isinstance(model, AdaptModel)
    model.score.fill_(5.0)
    model.text_score.fill_(5.0)
    model.score[2, 1] = 0.1
    model.text_score[0, 0] = 0.2
    model.text_score[1, 1] = 0.3
    model.prune(epoch=7)
    assert not model.keep[2, 1] and not model.text_keep[0, 0] and not model.text_keep[1, 1]
    assert int(model.keep.sum()) + int(model.text_keep.sum()) == 4 * 2 + 2 * 2 - 3
    assert model.text_pruned_epoch[1, 1] == 7 and model.pruned_epoch[2, 1] == 7


@pytest.mark.parametrize(
    ("backbone", "strategy", "values", "message"),
    [
        ("mini_vit", "zero_shot", {}, "needs a CLIP backbone"),
        ("mini_vit", "vpt_deep", {"head": "text"}, "needs a CLIP backbone"),
        (
            "mini_clip",
            "adapt",
            {"head": "text", "towers": "text", "context_length": 4, "target_length": 9},
            "exceeds the 8 tokens of towers 'text'",
        ),
    ],
)
def test_what_has_no_form_on_the_backbone_is_refused_before_any_job(backbone, strategy, values, message):
    assert message in family_problem(BACKBONES[backbone], strategy, values)
    assert family_problem(BACKBONES["mini_clip"], "zero_shot", {}) is None


def test_text_prompts_without_the_text_head_are_refused_by_the_strategy():
    problems = get_strategy("adapt").problems("$.strategies.adapt", {}, {"towers": "both"}, depth=4)
    assert any("only head 'text' reads" in p for p in problems)


@pytest.mark.parametrize("strategy", ["coop", "adapt"])
def test_a_clip_run_lowers_its_loss_and_its_tuned_state_reproduces_the_logits(clip_file, strategy, tmp_path):
    from safetensors.torch import load_file

    from vptft import engine
    from vptft.data import SplitData
    from vptft.strategies.base import tuned_state_dict

    _, path = clip_file
    values = (
        {"n_ctx": 4}
        if strategy == "coop"
        else {
            "head": "text",
            "towers": "both",
            "context_length": 2,
            "target_length": 6,
            "prune_every": 2,
            "warmup_epochs": 1,
        }
    )
    model = _build(path, strategy, **values)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(24) % 3
    images = (labels[:, None, None, None] * 80 + torch.randn(24, 3, 32, 32, generator=g) * 20).clamp(0, 255)
    cfg = engine.FitConfig("sgd", lr=2.0, weight_decay=0.0, epochs=5, warmup_epochs=0, batch_size=8, seed=0)
    inputs = {"size": (32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    curves = engine.fit(
        model, SplitData(images.to(torch.uint8), labels), {}, cfg, inputs, torch.device("cpu")
    )
    assert curves["curves"][-1]["train_loss"] < 0.9 * curves["curves"][0]["train_loss"]
    model.eval()
    save_file(
        {k: v.contiguous() for k, v in tuned_state_dict(model).items()}, str(tmp_path / "t.safetensors")
    )
    fresh = _build(path, strategy, **values).eval()
    fresh.load_state_dict(load_file(str(tmp_path / "t.safetensors")), strict=False)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


def test_zero_shot_and_coop_run_through_the_sweep_and_final_jobs(prepared_mini, tmp_path):
    """A CLIP backbone in the workflow's jobs: the class names reach the head from the task, zero-shot is
    evaluated without training (epoch 0), CoOp trains; a final run records its captions and reloads."""
    from conftest import write_digits_manifest
    from test_sweep import TRAIN
    from vptft.attribution import load_trained
    from vptft.selection import merge_sweep
    from vptft.sweep import run_final, run_sweep_chunk

    data_dir, _ = prepared_mini
    write_digits_manifest(tmp_path / "manifest.json", prepared_mini, n_test=40)
    _write(_open_clip(), tmp_path / "clip.safetensors")
    for strategy, grid in (("zero_shot", {"lr": [1.0], "wd": [0.0]}), ("coop", {"lr": [0.5], "wd": [0.0]})):
        spec = {
            "task": "digits",
            "regime": "vtab1k",
            "strategy": strategy,
            "backbone": "mini_clip",
            "data_dir": data_dir,
            "grid": grid,
            "options": {"n_ctx": 2} if strategy == "coop" else {},
            "train": dict(TRAIN),
        }
        chunk = tmp_path / f"{strategy}_chunk0.csv"
        run_sweep_chunk(spec, tmp_path / "manifest.json", tmp_path / "clip.safetensors", chunk)
        merge_sweep([chunk], tmp_path / f"{strategy}_sweep.csv", expected_points=1)
        [metrics] = run_final(
            spec,
            tmp_path / "manifest.json",
            tmp_path / "clip.safetensors",
            tmp_path / f"{strategy}_sweep.csv",
            tmp_path / strategy,
            [0],
        )
        assert metrics["class_texts"] == [[str(i) for i in range(10)], "a photo of a {}."]
        assert (metrics["epochs"] == 0) == (strategy == "zero_shot")
        assert metrics["tuned"] == (0 if strategy == "zero_shot" else 2 * 64)
        model = load_trained(tmp_path / strategy / "seed0", tmp_path / "clip.safetensors", 10)
        assert model.head.texts[0] == ("a photo of a 0." if strategy == "zero_shot" else "X X 0.")


def test_the_default_makes_adapt_table1_and_figure1_from_exactly_the_mini_clips_runs(tmp_path):
    """The default config's `results/adapt_table1.csv` asks for the five rows' final runs on its two tasks (on the
    mini CLIP, pre-trained by the workflow) and for nothing of the main backbone's; Figure 1 reads that table."""
    from conftest import ROOT
    from test_strategy_variants import trained_by_dry_run

    configs = [f"{ROOT}/config/config.yaml"]
    rows = {"zero_shot", "linear", "coop", "vpt_deep[head=text]", "adapt[head=text,towers=both]"}
    expected = {(t, s) for t in ("source", "newshapes_sketch") for s in rows}
    assert trained_by_dry_run(tmp_path, "results/adapt_table1.csv", configs) == expected
    assert trained_by_dry_run(tmp_path, "results/adapt_figure1.png", configs) == expected


def test_adapts_schedule_check_counts_the_text_towers_tokens():
    """24 tokens (4 image + 2 text blocks x 4) to 12 at 2 a step: 6 pruning steps, not the image tower's 2."""
    spec = get_strategy("adapt")
    values = {
        "towers": "both",
        "head": "text",
        "context_length": 4,
        "target_length": 12,
        "prune_tokens": 2,
        "prune_every": 1,
        "warmup_epochs": 0,
    }
    assert spec.schedule_problem(values, epochs=5, steps=5, depth=4, text_depth=2) is not None
    assert spec.schedule_problem(values, epochs=6, steps=6, depth=4, text_depth=2) is None
    assert (
        spec.schedule_problem({**values, "towers": "image"}, epochs=2, steps=2, depth=4, text_depth=2) is None
    )


def test_adapt_figure1_draws_each_strategys_top1_by_shots_per_task_and_their_mean(tmp_path):
    import pandas as pd

    from vptft import figures, study

    rows = []
    for shots in (1, 16):
        for selection in ("random", "prototype"):
            for strategy, base in (("zero_shot", 50.0), ("coop", 40.0)):
                top = base + shots + (1 if selection == "prototype" else 0)
                rows.append(
                    dict(
                        shots=shots,
                        selection=selection,
                        strategy=strategy,
                        source=top,
                        other=top - 20,
                        mean_natural=top,
                        tuned_pct=0.0 if strategy == "zero_shot" else 0.01,
                    )
                )
    means = figures.adapt_figure1(pd.DataFrame(rows), ["source", "other"], tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    mean = means[(means.task == "mean") & (means.selection == "random")].set_index(["strategy", "shots"]).top1
    assert mean[("coop", 16)] == 46.0 and mean[("zero_shot", 1)] == 41.0  # (x + x - 20) / 2
    assert set(means.task) == {"source", "other", "mean"} and len(means) == 8 * 3
    config = {"tables": {}, "regimes": {}, "strategies": {}}
    assert "tables.adapt_table1" in study.output_problem(config, study.CLIP_FIGURE)

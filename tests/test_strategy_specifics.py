"""What each strategy promises beyond the shared contract: FT-then-PT continues the full run bit for bit (and the
DAG feeds it that run), Adapt prunes to its budget by saliency, zero-initialised additions leave the backbone's
output unchanged at init."""

import copy
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from vptft import engine
from vptft.data import SplitData
from vptft.strategies import get_strategy
from vptft.strategies.base import make_head
from vptft.sweep import load_backbone_of_run, save_tuned

X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_ft_then_pt_starts_bit_for_bit_from_the_full_run(mini_vit, tmp_path):
    full = get_strategy("full").build(copy.deepcopy(mini_vit), 4)
    with torch.no_grad():  # a "finished" full run: every backbone weight moved
        for p in full.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_tuned(full, tmp_path / "tuned.safetensors")
    backbone = copy.deepcopy(mini_vit)
    load_backbone_of_run(backbone, tmp_path / "tuned.safetensors")
    model = get_strategy("ft_then_pt").build(backbone, 4, prompt_length=2)
    expected = full.backbone.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.backbone.state_dict().items())
    assert set(dict(model.named_parameters())) - {"prompts", "head.weight", "head.bias"} == {
        f"backbone.{k}" for k in dict(mini_vit.named_parameters())
    }
    assert not any(p.requires_grad for p in model.backbone.parameters())  # stage 2 tunes prompts + head only

    linear = get_strategy("linear").build(copy.deepcopy(mini_vit), 4)
    save_tuned(linear, tmp_path / "linear.safetensors")
    with pytest.raises(RuntimeError, match="not a whole backbone"):
        load_backbone_of_run(copy.deepcopy(mini_vit), tmp_path / "linear.safetensors")
    with pytest.raises(FileNotFoundError, match="run it first"):
        load_backbone_of_run(copy.deepcopy(mini_vit), tmp_path / "missing.safetensors")


@pytest.mark.workflow
def test_the_dag_feeds_ft_then_pt_the_full_jobs_outputs(tmp_path):
    target = "results/mini/runs/mini_vit/digits/vtab1k/ft_then_pt/seed0/metrics.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "-c1",
            "-s",
            f"{ROOT}/Snakefile",
            "-d",
            str(tmp_path),
            target,
            "--configfile",  # the calibrated sizes: three seeds, each continuing its own full run
            f"{ROOT}/config/config.yaml",
            f"{ROOT}/config/mini-full.yaml",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = proc.stdout.split("\nrule ")
    full_dir = "results/mini/runs/mini_vit/digits/vtab1k/full"

    def job(rule, strategy):
        found = [j for j in jobs if j.startswith(f"{rule}:") and f"strategy={strategy}" in j]
        assert len(found) == 1, (rule, strategy)
        return found[0]

    assert f"{full_dir}/stage1.safetensors" in job("stage1", "full").split("output:")[1]
    assert all(
        f"{full_dir}/stage1.safetensors" in j.split("output:")[0]
        for j in jobs
        if j.startswith("sweep:") and "strategy=ft_then_pt" in j
    )
    train_inputs = job("train", "ft_then_pt").split("output:")[0]
    assert all(f"{full_dir}/seed{s}/tuned.safetensors" in train_inputs for s in (0, 1, 2))
    assert f"{full_dir}/seed0/tuned.safetensors" in job("train", "full").split("output:")[1]


def adapt_model(backbone, **options):
    torch.manual_seed(0)
    defaults = dict(context_length=4, target_length=5, prune_every=2, prune_tokens=3, warmup_epochs=2)
    return get_strategy("adapt").build(
        copy.deepcopy(backbone), 3, head_init="zero", **{**defaults, **options}
    )


def run_adapt(model, epochs):
    g = torch.Generator().manual_seed(0)
    data = SplitData(
        torch.randint(0, 255, (32, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(32) % 3
    )
    cfg = engine.FitConfig(
        "sgd", lr=0.5, weight_decay=0.0, epochs=epochs, warmup_epochs=1, batch_size=8, seed=0
    )
    history = []  # (epoch, active tokens) after every backward pass
    prune = model.after_backward

    def recorded(epoch):
        prune(epoch)
        history.append((epoch, int(model.keep.sum())))

    model.after_backward = recorded
    engine.fit(
        model, data, {}, cfg, {"size": (32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3}, torch.device("cpu")
    )
    return history


def test_adapt_prunes_to_exactly_the_target_and_never_during_warmup(mini_vit):
    model = adapt_model(mini_vit)
    history = run_adapt(model, epochs=6)  # 4 steps per epoch: pruning from epoch 2, every 2 steps, 3 tokens
    assert all(active == 16 for epoch, active in history if epoch < 2)
    assert [active for epoch, active in history if epoch == 2] == [16, 13, 13, 10]
    assert int(model.keep.sum()) == 5 and history[-1][1] == 5  # 16 -> 13 -> 10 -> 7 -> 5, then no more
    summary = model.summary()
    assert summary["active_tokens"] == 5 and sum(summary["context_lengths"]) == 5
    assert len(summary["context_lengths"]) == len(mini_vit.blocks)
    # the history: which tokens went in which epoch (Adapt's Figure 3), consistent with the mask
    pruned = torch.tensor(summary["pruned_epoch"])
    assert torch.equal(pruned == -1, model.keep)
    per_epoch = {e: int((pruned == e).sum()) for e in range(6)}
    assert per_epoch == {0: 0, 1: 0, 2: 6, 3: 5, 4: 0, 5: 0}  # 16 -> 10 in epoch 2, -> 7 -> 5 in epoch 3


def test_adapt_l2_prunes_the_smallest_norm_tokens_first(mini_vit):
    model = adapt_model(
        mini_vit, saliency="l2", warmup_epochs=0, prune_every=1, prune_tokens=3, target_length=13
    )
    with torch.no_grad():
        model.prompts.normal_()
        smallest = [(1, 2), (3, 0), (0, 3)]
        for layer, token in smallest:
            model.prompts[layer, token] *= 1e-3
    model.prompts.grad = torch.zeros_like(model.prompts)
    model.after_backward(epoch=0)
    assert sorted(map(tuple, (~model.keep).nonzero().tolist())) == sorted(smallest)
    model.after_backward(epoch=0)  # at the target: nothing more is pruned
    assert int(model.keep.sum()) == 13


def backbone_logits(backbone, head, x):
    with torch.no_grad():
        return head(backbone.forward_head(backbone.forward_features(x), pre_logits=True))


@pytest.mark.parametrize("name", ["lora", "adapter"])
def test_zero_initialised_additions_leave_the_logits_unchanged_at_init(mini_vit, name):
    model = get_strategy(name).build(copy.deepcopy(mini_vit), 3).eval()
    head = make_head(96, 3)
    model.head.load_state_dict(head.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(X), backbone_logits(mini_vit.eval(), head, X), rtol=1e-5, atol=1e-5)
        for p in model.param_groups()["added"].values():
            p.normal_()
        assert not torch.allclose(model(X), backbone_logits(mini_vit, head, X), atol=1e-3)


def test_lora_goes_through_peft(mini_vit):
    from peft.tuners.lora import LoraLayer

    model = get_strategy("lora").build(copy.deepcopy(mini_vit), 3, rank=4, alpha=8.0)
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(layers) == len(mini_vit.blocks) and all(m.r["default"] == 4 for m in layers)
    assert all(not m.lora_B["default"].weight.any() for m in layers)  # B = 0: unchanged at init


@pytest.mark.parametrize("name", ["vpt_prefix", "adapt"])
def test_key_value_prompts_with_every_token_masked_are_the_plain_backbone(mini_vit, name):
    """Prompts enter only the keys and values: removing all of them from the attention gives the backbone."""
    model = get_strategy(name).build(copy.deepcopy(mini_vit), 3).eval()
    with torch.no_grad():
        model.keep.fill_(False)
        torch.testing.assert_close(
            model(X), backbone_logits(mini_vit.eval(), model.head, X), rtol=1e-5, atol=1e-5
        )
        model.keep.fill_(True)
        assert not torch.allclose(model(X), backbone_logits(mini_vit, model.head, X), atol=1e-4)


def test_sidetune_starts_as_an_even_blend(mini_vit):
    model = get_strategy("sidetune").build(copy.deepcopy(mini_vit), 3).eval()
    with torch.no_grad():
        tokens = model.forward_features(X)
        feature = model.forward_head(tokens, pre_logits=True)
        plain = mini_vit.eval().forward_head(mini_vit.forward_features(X), pre_logits=True)
        expected = 0.5 * plain + 0.5 * model.side(X)
    torch.testing.assert_close(feature, expected)


def test_a_checkpoint_of_another_strategy_is_refused_on_resume(mini_vit, tmp_path):
    """Resuming must restore every tuned tensor and buffer (e.g. Adapt's token mask), never a subset."""
    cfg = engine.FitConfig("sgd", lr=0.1, weight_decay=0.0, epochs=1, warmup_epochs=0, batch_size=8, seed=0)
    prefix = get_strategy("vpt_prefix").build(copy.deepcopy(mini_vit), 3, prompt_length=4)
    engine._save_checkpoint(tmp_path / "c.pt", prefix, engine.make_optimizer(prefix, cfg), {})
    adapt = adapt_model(mini_vit, context_length=4)
    with pytest.raises(RuntimeError, match="tuned state differs"):
        engine._load_checkpoint(tmp_path / "c.pt", adapt, engine.make_optimizer(adapt, cfg))


def test_adapt_figure3_draws_the_mask_of_each_layer_at_its_epochs(tmp_path):
    from vptft.figures import adapt_figure3

    pruned = [[-1, 2, 4, -1], [0, -1, -1, 9], [-1, -1, -1, -1]]  # layer x token: the epoch it was pruned in
    metrics = {"summary": {"pruned_epoch": pruned}, "epochs": 11, "strategy": "adapt", "task": "t", "seed": 0}
    active = adapt_figure3(metrics, tmp_path / "f.png", panels=3)  # epochs 1, 6, 11
    table = active.pivot(index="layer", columns="epoch", values="active")
    assert list(table.columns) == [1, 6, 11]
    assert (
        table.loc[0].tolist() == [4, 2, 2]
        and table.loc[1].tolist() == [3, 3, 2]
        and table.loc[2].tolist() == [4] * 3
    )
    assert (tmp_path / "f.png").stat().st_size > 3000

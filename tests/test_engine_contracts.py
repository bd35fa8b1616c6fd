"""Engine promises beyond the training loop's arithmetic: frozen features computed once per split and at the job's
precision, checkpoints read without running pickled code and refused with the keys that differ, SIGTERM turned
into a flag and into the exit code of a process killed by it."""

import copy
import math
import os
import signal
import threading
import time

import pytest
import torch

from conftest import spy_autocast
from vptft import engine
from vptft.data import SplitData
from vptft.strategies import get_strategy

CPU = torch.device("cpu")
INPUT = {"size": (32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3}


def images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SplitData(
        torch.randint(0, 255, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(n) % 3
    )


def test_cached_features_are_computed_once_per_split_across_calls(mini_vit):
    model = get_strategy("linear").build(mini_vit, 3)
    passes = []
    model.backbone.patch_embed.register_forward_hook(lambda *args: passes.append(1))
    splits = {"train": images(4), "val": images(2, seed=1)}
    cache = {}
    first = engine.cached_features(model, splits, cache, INPUT, CPU)
    assert set(cache) == {"train", "val"} and len(passes) == 2
    again = engine.cached_features(model, {"val": splits["val"]}, cache, INPUT, CPU)
    assert again["val"] is first["val"] and len(passes) == 2  # no second pass over the same split


def test_cached_features_of_larger_decoded_images_are_those_of_their_centre_crop(mini_vit):
    """FGVC's images are decoded at 256/224 of the input: frozen features are taken of the centre crop."""
    model = get_strategy("linear").build(mini_vit, 3)
    large = SplitData(torch.randint(0, 255, (3, 3, 37, 37), dtype=torch.uint8), torch.arange(3))
    centre = SplitData(large.images[..., 2:34, 2:34].clone(), large.labels)
    got = engine.cached_features(model, {"train": large}, {}, INPUT, CPU)["train"].images
    want = engine.cached_features(model, {"train": centre}, {}, INPUT, CPU)["train"].images
    assert torch.equal(got, want)


def test_each_batch_of_each_epoch_and_seed_draws_its_own_crops():
    seeds = {engine.crop_seed(s, e, b) for s in range(3) for e in range(4) for b in range(5)}
    assert len(seeds) == 3 * 4 * 5


def test_cached_features_are_extracted_at_the_jobs_precision(mini_vit, monkeypatch):
    """bf16 is an autocast on CUDA (a no-op on the CPU): the feature pass must ask for it too."""
    precisions = spy_autocast(monkeypatch, engine)
    model = get_strategy("linear").build(mini_vit, 3)
    engine.cached_features(model, {"train": images(4)}, None, INPUT, CPU, precision="bf16")
    assert precisions == ["bf16"]
    precisions.clear()  # and a fit on cached features passes its precision to the feature pass
    cfg = engine.FitConfig(
        "sgd", lr=0.1, weight_decay=0.0, epochs=1, warmup_epochs=0, batch_size=4, seed=0, precision="bf16"
    )
    engine.fit(model, images(4), {"val": images(4)}, cfg, INPUT, CPU, cache_features=True)
    assert precisions and set(precisions) == {"bf16"}


def test_results_count_every_checkpoint_written_and_its_bytes(mini_vit, tmp_path, monkeypatch):
    sizes, real = [], engine._save_checkpoint
    monkeypatch.setattr(engine, "_save_checkpoint", lambda *args: sizes.append(real(*args)) or sizes[-1])
    model = get_strategy("linear").build(mini_vit, 3)
    cfg = _sgd(3, checkpoint_interval_s=0.0)
    result = engine.fit(
        model, images(4), {"val": images(4)}, cfg, INPUT, CPU, checkpoint=tmp_path / "ckpt.pt"
    )
    assert len(sizes) >= 2 and min(sizes) > 0
    assert (result["checkpoints"], result["checkpoint_bytes"]) == (len(sizes), sum(sizes))


def _sgd(epochs, **kwargs):
    return engine.FitConfig(
        "sgd", lr=0.5, weight_decay=1e-3, epochs=epochs, warmup_epochs=0, batch_size=4, seed=0, **kwargs
    )


def test_a_run_stopped_by_sigterm_mid_epoch_resumes_at_the_next_batch_to_the_same_curves(mini_vit, tmp_path):
    """SLURM's SIGTERM lands between two steps: the checkpoint holds the epoch's position and running sums."""
    train, val = images(12), {"val": images(4, seed=1)}

    def run(checkpoint, stop_after_step=None):
        torch.manual_seed(0)
        model = get_strategy("linear").build(copy.deepcopy(mini_vit), 3)
        steps = []

        def after_backward(epoch):
            steps.append(epoch)
            if len(steps) == stop_after_step:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler only sets the flag the loop reads

        model.after_backward = after_backward
        return engine.fit(model, train, val, _sgd(3), INPUT, CPU, checkpoint=checkpoint)

    straight = run(None)
    checkpoint = tmp_path / "ckpt.pt"
    with pytest.raises(SystemExit) as stopped:
        run(checkpoint, stop_after_step=5)  # epoch 2 (of 3 batches each), after its second batch
    assert stopped.value.code == 143
    state = torch.load(checkpoint, weights_only=True)
    assert (state["next_epoch"], state["next_batch"]) == (1, 2)
    resumed = run(checkpoint)
    assert resumed["curves"] == straight["curves"]


def test_training_and_evaluation_run_at_the_jobs_precision(mini_vit, monkeypatch):
    precisions = spy_autocast(monkeypatch, engine)
    model = get_strategy("linear").build(mini_vit, 3)
    engine.fit(model, images(4), {"val": images(4)}, _sgd(2, precision="bf16"), INPUT, CPU)
    assert len(precisions) == 2 * (1 + 1) and set(precisions) == {"bf16"}  # per epoch: a step, an evaluation


def test_bf16_autocasts_on_cuda_only_and_tf32_is_a_cuda_switch(monkeypatch):
    """The CUDA branches decided without a GPU: what torch.autocast is asked for, and the TF32 flags."""
    asked = []
    monkeypatch.setattr(torch, "autocast", lambda device_type, **kw: asked.append((device_type, kw)))
    cuda = torch.device("cuda")
    for device, precision in [(cuda, "bf16"), (cuda, "fp32"), (cuda, "tf32"), (CPU, "bf16")]:
        engine._autocast(device, precision)
    on = {"dtype": torch.bfloat16, "enabled": True}
    off = {"dtype": torch.bfloat16, "enabled": False}
    assert asked == [("cuda", on), ("cuda", off), ("cuda", off), ("cpu", off)]
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        engine.set_precision(cuda, "tf32")
        assert torch.backends.cuda.matmul.allow_tf32 is True and torch.backends.cudnn.allow_tf32 is True
        engine.set_precision(cuda, "fp32")
        assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
        engine.set_precision(cuda, "tf32")
        engine.set_precision(CPU, "fp32")  # the CPU leaves the CUDA flags alone
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def test_checkpoints_wait_for_their_interval_and_a_finished_run_always_saves(mini_vit, tmp_path, monkeypatch):
    saved = []
    real = engine._save_checkpoint
    monkeypatch.setattr(
        engine,
        "_save_checkpoint",
        lambda path, m, o, at: saved.append(at["next_epoch"]) or real(path, m, o, at),
    )
    model = get_strategy("linear").build(mini_vit, 3)
    start = time.perf_counter()
    result = engine.fit(
        model,
        images(4),
        {"val": images(4)},
        _sgd(3, checkpoint_interval_s=3600.0),
        INPUT,
        CPU,
        checkpoint=tmp_path / "ckpt.pt",
    )
    elapsed = time.perf_counter() - start
    assert saved == [3]  # not after epochs 1 and 2 (an hour has not passed), after the last
    assert 0.0 < result["seconds"] <= elapsed


def test_adamw_on_the_cpu_is_the_fused_kernel(mini_vit):
    """make_optimizer asks for the fused AdamW kernel on the CPU (one kernel over every tensor, not a loop)."""
    model = get_strategy("full").build(mini_vit, 3)
    cfg = engine.FitConfig(
        "adamw", lr=1e-3, weight_decay=0.01, epochs=1, warmup_epochs=0, batch_size=4, seed=0
    )
    assert engine.make_optimizer(model, cfg).defaults["fused"] is True


def test_evaluation_averages_loss_and_counts_correct_over_every_batch(monkeypatch):
    monkeypatch.setattr(engine, "EVAL_BATCH", 2)  # 5 images: batches of 2, 2 and 1
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.5, 0.0], [0.0, 2.0]])
    data = SplitData(torch.arange(5).float()[:, None], torch.tensor([0, 0, 0, 1, 1]))
    got = engine.evaluate(lambda x: logits[x[:, 0].long()], data, lambda x: x, CPU, "fp32")
    assert got["loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, data.labels).item(), rel=1e-6
    )
    assert got["top1"] == pytest.approx(60.0)  # images 0, 2 and 4 right
    one = engine.evaluate(
        lambda x: logits[x[:, 0].long()],
        SplitData(data.images[:1], data.labels[:1]),
        lambda x: x,
        CPU,
        "fp32",
    )
    assert one["top1"] == 100.0 and one["loss"] == pytest.approx(-torch.log_softmax(logits[0], 0)[0].item())
    assert engine.evaluate(
        lambda x: x, SplitData(torch.zeros(0, 2), torch.zeros(0).long()), None, CPU, "fp32"
    ) == {
        "loss": 0.0,
        "top1": 0.0,
    }


def test_compile_wraps_the_training_forward_and_uses_what_it_returns(mini_vit, monkeypatch):
    compiled = []

    def fake_compile(forward):
        compiled.append(forward)
        return lambda x: forward(x) * 0.0  # a forward whose use shows: nothing to learn from

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = get_strategy("linear").build(mini_vit, 3)
    cfg = engine.FitConfig(
        "sgd", lr=0.1, weight_decay=0.0, epochs=1, warmup_epochs=0, batch_size=4, seed=0, compile=True
    )
    head = model.head.weight.detach().clone()
    result = engine.fit(model, images(4), {"val": images(4)}, cfg, INPUT, CPU)
    assert compiled == [model]
    assert torch.equal(model.head.weight, head)  # zero logits: no gradient reaches the head
    assert result["curves"][-1]["train_loss"] == pytest.approx(math.log(3))


LOADED = []


def _record_load():
    LOADED.append(True)
    return "code ran"


class PickledCode:
    """Unpickling this calls `_record_load`: what a tampered checkpoint could do with arbitrary code."""

    def __reduce__(self):
        return _record_load, ()


def _checkpoint(model, path):
    cfg = engine.FitConfig("sgd", lr=0.1, weight_decay=0.0, epochs=1, warmup_epochs=0, batch_size=8, seed=0)
    optimizer = engine.make_optimizer(model, cfg)
    engine._save_checkpoint(path, model, optimizer, {"next_epoch": 1})
    return optimizer


def test_a_checkpoint_holding_a_pickled_object_is_refused_without_running_it(mini_vit, tmp_path):
    model = get_strategy("linear").build(mini_vit, 3)
    path = tmp_path / "checkpoint.pt"
    optimizer = _checkpoint(model, path)
    assert engine._load_checkpoint(path, model, optimizer)["next_epoch"] == 1  # a plain one loads
    state = torch.load(path, weights_only=True)
    torch.save({**state, "note": PickledCode()}, path)
    LOADED.clear()
    with pytest.raises(RuntimeError, match="corrupt or incompatible training checkpoint"):
        engine._load_checkpoint(path, model, optimizer)
    assert not LOADED


def test_a_checkpoint_of_another_model_is_refused_naming_the_keys_that_differ(mini_vit, tmp_path):
    path = tmp_path / "checkpoint.pt"
    _checkpoint(get_strategy("vpt_prefix").build(copy.deepcopy(mini_vit), 3, prompt_length=2), path)
    adapt = get_strategy("adapt").build(copy.deepcopy(mini_vit), 3, context_length=2, target_length=4)
    cfg = engine.FitConfig("sgd", lr=0.1, weight_decay=0.0, epochs=1, warmup_epochs=0, batch_size=8, seed=0)
    with pytest.raises(RuntimeError, match="tuned state differs") as err:
        engine._load_checkpoint(path, adapt, engine.make_optimizer(adapt, cfg))
    assert "['batches', 'pruned_epoch', 'score']" in str(
        err.value
    )  # Adapt's own buffers, not the keys both hold


def test_sigterm_sets_the_flag_the_training_loop_checks():
    term = engine._TermSignal()
    assert term.received is False
    term._handle(signal.SIGTERM, None)
    assert term.received is True


def test_sigterm_handler_is_installed_in_the_main_thread_and_restored_after():
    before = signal.getsignal(signal.SIGTERM)
    with engine._TermSignal() as term:
        assert signal.getsignal(signal.SIGTERM) == term._handle
    assert signal.getsignal(signal.SIGTERM) == before
    outcome = []  # another thread (a worker pool's) may not install handlers: the context leaves them alone

    def enter_elsewhere():
        try:
            with engine._TermSignal():
                outcome.append(signal.getsignal(signal.SIGTERM))
        except Exception as err:  # noqa: BLE001 - a thread's exception would otherwise only be printed
            outcome.append(err)

    thread = threading.Thread(target=enter_elsewhere)
    thread.start()
    thread.join()
    assert outcome == [before]


def test_terminated_exits_like_a_process_killed_by_sigterm():
    with pytest.raises(SystemExit) as exit_info:
        raise engine.Terminated()
    assert exit_info.value.code == 143 == 128 + signal.SIGTERM


def test_auto_picks_cuda_where_there_is_one_and_the_cpu_otherwise(monkeypatch):
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert engine.pick_device() == engine.pick_device("auto") == expected
    assert engine.pick_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the CUDA answer, decided without a GPU
    assert engine.pick_device() == torch.device("cuda")

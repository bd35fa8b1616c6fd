"""Engine promises beyond the training loop's arithmetic: frozen features computed once per split and at the job's
precision, checkpoints read without running pickled code and refused with the keys that differ, SIGTERM turned
into a flag and into the exit code of a process killed by it."""

import copy
import signal

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
    assert "['batches', 'score']" in str(err.value)  # Adapt's own buffers, not the keys both hold


def test_sigterm_sets_the_flag_the_training_loop_checks():
    term = engine._TermSignal()
    assert term.received is False
    term._handle(signal.SIGTERM, None)
    assert term.received is True


def test_terminated_exits_like_a_process_killed_by_sigterm():
    with pytest.raises(SystemExit) as exit_info:
        raise engine.Terminated()
    assert exit_info.value.code == 143 == 128 + signal.SIGTERM


def test_auto_picks_cuda_where_there_is_one_and_the_cpu_otherwise():
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert engine.pick_device() == engine.pick_device("auto") == expected
    assert engine.pick_device("cpu") == CPU

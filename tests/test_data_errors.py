"""Bad input gets a clear error naming the file and the fix, never a silent wrong result."""

import numpy as np
import pytest
import torch

from vptft import engine, tasks
from vptft.data import SplitData
from vptft.strategies import get_strategy


def test_label_outside_the_task_classes_is_refused(tmp_path):
    task = tasks.get_task("newshapes_src")
    info = tasks.prepare(task, str(tmp_path))
    data = dict(np.load(info["path"]))
    data["train_labels"][3] = task.num_classes + 5
    with open(info["path"], "wb") as f:
        np.savez(f, **data)
    with pytest.raises(ValueError, match=r"label outside 0\.\.7 in split 'train'"):
        tasks.load_images(task, "train", range(10), str(tmp_path))


def test_truncated_task_data_names_the_file(tmp_path):
    task = tasks.get_task("digits")
    info = tasks.prepare(task, str(tmp_path))
    with open(info["path"], "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="digits.npz: unreadable"):
        tasks.load_images(task, "train", [0], str(tmp_path))


def test_corrupt_training_checkpoint_names_the_file(mini_vit, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    model = get_strategy("linear").build(mini_vit, 3)
    cfg = engine.FitConfig("sgd", lr=0.1, weight_decay=0, epochs=1, warmup_epochs=0, batch_size=4, seed=0)
    data = SplitData(torch.zeros(8, 3, 32, 32, dtype=torch.uint8), torch.zeros(8, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="checkpoint.pt: corrupt or incompatible training checkpoint"):
        engine.fit(
            model,
            data,
            {},
            cfg,
            {"size": (32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3},
            torch.device("cpu"),
            checkpoint=checkpoint,
        )


def test_missing_tfds_dataset_says_to_run_download(tmp_path):
    pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is a declared dependency")
    with pytest.raises(FileNotFoundError, match="is not prepared under .*run the `download` rule"):
        tasks.load_labels(tasks.get_task("eurosat"), "train", str(tmp_path))

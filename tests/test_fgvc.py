"""FGVC: the five tasks against `tfds.testing.mock_data` and a fake NABirds folder (no network), the fgvc and
fraction regimes (the VPT paper's data table, nested fractions, final runs on train only), FGVC's preprocessing
(resize, crops, flips) against torchvision's transforms, Table 19's FID row and the fraction figures."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from vptft import data, engine, report, study, tasks
from vptft.splits import build_manifest, family_of, regime_names, regime_spec
from vptft.tasks import fgvc

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is a declared dependency")

FGVC = tasks.tasks_of("fgvc")
REGIMES = {"fgvc": {}, "fraction": {"percent": [10, 40, 80]}}


class FakeSource:
    """A TFDS data source of the catalog's length whose records cycle through every class."""

    def __init__(self, size, num_classes, with_image):
        self.size, self.num_classes, self.with_image = size, num_classes, with_image

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        if not 0 <= index < self.size:
            raise IndexError(index)
        record = {"label": index % self.num_classes}
        if self.with_image:
            record["image"] = np.random.default_rng(index).integers(0, 256, (30, 20, 3), dtype=np.uint8)
        return record


@pytest.fixture
def mocked_tfds():
    by_builder = {
        tasks.tfds_prepare.family(t.extra["builder"]): t
        for t in map(tasks.get_task, FGVC)
        if t.extra["builder"]
    }

    def as_data_source(builder, split, decoders=None, **kwargs):
        task = by_builder[builder.name]
        return FakeSource(fgvc.SPLIT_SIZES[task.name][split], task.num_classes, with_image=not decoders)

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        yield


def _indices(manifest, split):
    return {(src, i) for src, idx in manifest["splits"][split].items() for i in idx}


def _manifest(name, regime, data_dir, regimes=REGIMES):
    info = {"source": "mock", "split_sizes": fgvc.SPLIT_SIZES[name]}
    return build_manifest(name, regime, regime_spec(regime, regimes), info, str(data_dir))


def test_five_tasks_with_the_vpt_papers_class_counts_and_builders():
    assert sorted(FGVC) == sorted(fgvc.PAPER_SIZES)
    counts = {name: tasks.get_task(name).num_classes for name in FGVC}
    assert counts == {
        "cub200": 200,
        "nabirds": 555,
        "oxford_flowers": 102,
        "stanford_dogs": 120,
        "stanford_cars": 196,
    }
    for name in FGVC:
        task = tasks.get_task(name)
        assert task.fine_grained and task.preprocessing == "fgvc"
        if task.extra["builder"]:  # the TFDS builder exists in the installed TFDS at the pinned major version
            family, version = task.extra["builder"].split(":")
            assert str(tfds.builder_cls(family).VERSION).split(".")[0] == version.split(".")[0]
    assert tasks.get_task("nabirds").extra["builder"] is None  # no TFDS builder: the manual folder


@pytest.mark.parametrize("name", [n for n in FGVC if n != "nabirds"])
def test_fgvc_regime_reproduces_the_vpt_papers_data_table_on_mock_data(mocked_tfds, name, tmp_path):
    manifest = _manifest(name, "fgvc", tmp_path)
    train, val, trainval, test = (_indices(manifest, s) for s in ("train", "val", "trainval", "test"))
    assert (len(train), len(val), len(test)) == fgvc.PAPER_SIZES[name]
    assert not train & val and not trainval & test and trainval == train | val
    assert manifest["spec"]["final_split"] == "train"
    task = tasks.get_task(name)
    if name == "oxford_flowers":  # the official val split
        assert {split for split, _ in val} == {"validation"} and {s for s, _ in train} == {"train"}
    else:  # a seeded 90/10 split of train: not a slice
        assert {split for split, _ in train | val} == {"train"}
        assert sorted(i for _, i in val) != list(range(len(val)))
    images, labels = tasks.load_images(task, "train", range(3), str(tmp_path))
    assert all(im.shape == (30, 20, 3) for im in images) and labels.max() < task.num_classes
    assert _manifest(name, "fgvc", tmp_path)["splits"] == manifest["splits"]  # seeded: the same again


def test_fractions_are_nested_with_the_fgvc_val_part(mocked_tfds, tmp_path):
    whole = _manifest("cub200", "fgvc", tmp_path)
    parts = [_manifest("cub200", f"fraction{p}", tmp_path) for p in (10, 40, 80)]
    sizes = [len(_indices(m, "train")) for m in parts]
    assert sizes == [round(p / 100 * 5394) for p in (10, 40, 80)]
    assert _indices(parts[0], "train") < _indices(parts[1], "train") < _indices(parts[2], "train")
    assert _indices(parts[2], "train") < _indices(whole, "train")
    assert all(_indices(m, "val") == _indices(whole, "val") for m in parts)
    assert all(m["spec"]["final_split"] == "train" for m in parts)
    assert regime_names(REGIMES)[-3:] == ["fraction10", "fraction40", "fraction80"]
    assert {family_of(r) for r in regime_names(REGIMES)} == {"fgvc", "fraction"}


def test_val_fraction_and_final_split_are_options(mocked_tfds, tmp_path):
    regimes = {"fgvc": {"val_fraction": 0.25, "seed": 3, "final_split": "trainval"}}
    manifest = _manifest("stanford_dogs", "fgvc", tmp_path, regimes)
    assert len(_indices(manifest, "val")) == 3000 and manifest["spec"]["final_split"] == "trainval"
    assert _indices(manifest, "val") != _indices(_manifest("stanford_dogs", "fgvc", tmp_path), "val")


def test_sizes_that_differ_from_the_papers_table_are_reported():
    cub = tasks.get_task("cub200")
    assert fgvc.size_problems(cub, {"train": 5994, "test": 5794}) == []
    assert fgvc.size_problems(cub, {"train": 5990, "test": 5794}) == [
        "train: 5990 records, the VPT paper's table has 5994"
    ]
    flowers = tasks.get_task("oxford_flowers")
    assert fgvc.size_problems(flowers, fgvc.SPLIT_SIZES["oxford_flowers"]) == []


# ------------------------------------------------------------------------------------------------- NABirds
def _fake_nabirds(root):
    """A NABirds folder in the official layout: 3 leaf classes with gaps in their ids, 10 images (one grey)."""
    from PIL import Image

    folder = fgvc.nabirds_dir(root)
    (folder / "images").mkdir(parents=True)
    lines = {"images": [], "labels": [], "split": []}
    for i in range(10):
        class_id = (295, 17, 1000)[i % 3]
        path = f"{class_id:04d}/img{i}.jpg"
        (folder / "images" / f"{class_id:04d}").mkdir(exist_ok=True)
        mode, shape = ("L", (12, 9)) if i == 4 else ("RGB", (12, 9, 3))
        pixels = np.random.default_rng(i).integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(pixels, mode).save(folder / "images" / path)
        image_id = f"id{i:02d}"
        lines["images"].append(f"{image_id} {path}")
        lines["labels"].append(f"{image_id} {class_id}")
        lines["split"].append(f"{image_id} {int(i < 6)}")
    (folder / "images.txt").write_text("\n".join(lines["images"]) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(lines["labels"]) + "\n")
    (folder / "train_test_split.txt").write_text("\n".join(lines["split"]) + "\n")
    return str(root)


def test_nabirds_from_a_fake_manual_folder(tmp_path):
    data_dir = _fake_nabirds(tmp_path)
    task = tasks.get_task("nabirds")
    info = tasks.prepare(task, data_dir)
    assert info["split_sizes"] == {"train": 6, "test": 4}
    assert info["size_problems"]  # 6 / 4 records, not the paper's 23,929 / 24,633: reported
    labels = tasks.load_labels(task, "train", data_dir)
    assert labels.tolist() == [1, 0, 2, 1, 0, 2]  # class ids 295, 17, 1000 -> 1, 0, 2 (ascending ids)
    images, test_labels = tasks.load_images(task, "test", [0, 2], data_dir)
    assert test_labels.tolist() == [1, 2]  # images 6 and 8
    assert all(im.dtype == np.uint8 and im.shape == (12, 9, 3) for im in images)
    grey, _ = tasks.load_images(task, "train", [4], data_dir)
    assert grey[0].shape == (12, 9, 3)  # the grey image converted to RGB
    manifest = build_manifest("nabirds", "fgvc", regime_spec("fgvc", REGIMES), info, data_dir)
    assert len(_indices(manifest, "val")) == 1 and len(_indices(manifest, "train")) == 5  # ceil(10 % of 6)


def test_a_missing_nabirds_folder_says_what_to_fetch_and_where(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        tasks.prepare(tasks.get_task("nabirds"), str(tmp_path))
    message = str(err.value)
    assert "images.txt" in message and "dl.allaboutbirds.org" in message and str(tmp_path) in message


# ---------------------------------------------------------------------------------------------- transforms
def test_decoding_and_the_centre_crop_equal_torchvisions_resize_then_centre_crop():
    transforms = pytest.importorskip("torchvision.transforms.v2")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 450, 3), dtype=np.uint8)
    square = data.to_square_uint8_tensor([image], data.resize_size((224, 224))[0])
    assert square.shape == (1, 3, 256, 256)
    ours = data.centre_crop(square, (224, 224))[0]
    pipeline = transforms.Compose([transforms.Resize(256, antialias=True), transforms.CenterCrop(224)])
    theirs = pipeline(torch.as_tensor(image).permute(2, 0, 1).float()).round().clamp(0, 255)
    assert (ours.float() - theirs).abs().max() <= 1  # uint8 rounding of the resize only


def test_training_crops_are_random_flipped_and_reproducible_and_eval_is_the_centre():
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).reshape(2, 3, 10, 10).to(torch.uint8)
    normalize = data.Normalize((0.0,) * 3, (1 / 255,) * 3, crop=(8, 8))
    centre = normalize(x)
    assert torch.equal(centre, x[..., 1:9, 1:9].float())
    draws = [normalize(x, generator=torch.Generator().manual_seed(s)) for s in range(20)]
    assert torch.equal(draws[0], normalize(x, generator=torch.Generator().manual_seed(0)))
    assert len({tuple(d[0, 0, :, 0].tolist()) for d in draws}) > 3  # several offsets
    flipped = [d for d in draws if d[0, 0, 0, 0] > d[0, 0, 0, -1]]
    assert 0 < len(flipped) < len(draws)  # some crops are mirrored, not all
    same_size = data.Normalize((0.0,) * 3, (1 / 255,) * 3, crop=(10, 10))
    assert torch.equal(same_size(x, generator=torch.Generator().manual_seed(0)), x.float())  # nothing to crop


def _augmented_fit(seed):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    images = torch.randint(0, 256, (16, 3, 10, 10), dtype=torch.uint8)
    train = data.SplitData(images, torch.arange(16) % 4)
    cfg = engine.FitConfig(
        optimizer="sgd", lr=0.1, weight_decay=0.0, epochs=2, warmup_epochs=0, batch_size=8, seed=seed
    )
    input_cfg = {"mean": (0.5,) * 3, "std": (0.5,) * 3, "size": (8, 8)}
    return engine.fit(model, train, {"val": train}, cfg, input_cfg, torch.device("cpu"))


def test_a_fit_on_images_larger_than_the_input_trains_on_crops_reproducibly(monkeypatch):
    first, again = _augmented_fit(0), _augmented_fit(0)
    assert first["curves"] == again["curves"]
    drawn = []
    real = data.random_crop_flip
    monkeypatch.setattr(data, "random_crop_flip", lambda x, size, g: drawn.append(len(x)) or real(x, size, g))
    _augmented_fit(0)
    assert drawn == [8, 8, 8, 8]  # every training batch (2 epochs x 2), never an evaluation
    monkeypatch.setattr(data, "random_crop_flip", lambda x, size, g: data.centre_crop(x, size))
    centre_only = _augmented_fit(0)
    assert centre_only["curves"][-1]["train_loss"] != first["curves"][-1]["train_loss"]
    assert (
        centre_only["curves"][-1]["val_loss"] != first["curves"][-1]["val_loss"]
    )  # eval: the same crop, another model


# ----------------------------------------------------------------------------------- config, tables, figures
def test_config_refuses_fgvc_outputs_without_what_they_read():
    base = {
        "tasks": ["source", "finestars_src"],
        "strategies": {"full": {}, "vpt_deep": {}},
        "regimes": {
            "vtab1k": {},
            "fraction": {"percent": [20], "hparams": "fgvc", "strategies": ["vpt_deep"]},
        },
        "train": {"seeds": [0]},
        "backbone": "mini_vit",
        "tables": {"vpt_table1": {"regime": "vtab1k", "groups": ["natural", "fgvc"]}},
        "analyses": {"curves": {"tasks": ["finestars_src"]}, "attribution": {"tasks": ["finestars_src"]}},
    }
    problems = study.problems(base)
    assert any(p.startswith("$.regimes.fraction.hparams: 'fgvc' reuses") for p in problems)
    assert any(p.startswith("$.tables.vpt_table1.groups: the 'fgvc' group") for p in problems)
    assert any(
        p.startswith("$.analyses.curves.tasks[0]: 'finestars_src' has no vtab1k runs") for p in problems
    )
    assert any(p.startswith("$.analyses.attribution.tasks[0]: 'finestars_src'") for p in problems)
    assert "sets vpt_deep against other strategies" in study.output_problem(base, "vpt_figure3")
    assert study.claim_families({"regimes": {"vtab1k": {}, "fgvc": {}, "fraction": {}}}) == ["vtab1k"]


def test_fine_grained_tasks_train_in_the_fgvc_families_only():
    config = {
        "tasks": ["source", "finestars_src", "count_src"],
        "regimes": {"vtab1k": {}, "fgvc": {}, "fraction": {"percent": [20]}},
    }
    assert study.family_tasks(config, "vtab1k") == ["source", "count_src"]
    assert study.family_tasks(config, "fgvc") == ["finestars_src"]
    assert study.family_tasks(config, "fraction") == ["finestars_src"]
    assert study.vtab_tasks(config) == ["source", "count_src"]
    assert study.hparams_source({"regimes": {"fraction": {"hparams": "fgvc"}}}, "fraction20") == "fgvc"
    assert study.hparams_source({"regimes": {"fraction": {"hparams": "sweep"}}}, "fraction20") == "fraction20"


def test_table19_gets_a_fid_row_with_the_group_mean(tmp_path):
    table = pd.DataFrame(
        {"finestars_src": [50.0, 55.0], "finestars_sketch": [40.0, 38.0]},
        index=pd.Index(["full", "vpt_deep"], name="strategy"),
    )
    table["mean_fgvc"] = table.mean(axis=1)
    paths = []
    for task, value in (("finestars_src", 10.0), ("finestars_sketch", 30.0)):
        paths.append(tmp_path / f"{task}.json")
        paths[-1].write_text(json.dumps({"task": task, "fid_mean": value, "fid_std": value / 10}))
    spread = table[["finestars_src", "finestars_sketch"]] * 0 + 1.0
    out, out_spread = report.with_fid_row(table, spread, paths, ["fgvc"])
    assert out.loc["fid"].to_dict() == {"finestars_src": 10.0, "finestars_sketch": 30.0, "mean_fgvc": 20.0}
    assert out.loc["full", "finestars_src"] == 50.0
    assert out_spread.loc["fid"].to_dict() == {"finestars_src": 1.0, "finestars_sketch": 3.0}
    assert list(out_spread.index) == list(out.index)  # the notebook pairs them row by row
    assert report.with_fid_row(table, None, paths, ["fgvc"])[1] is None
    assert report.table_layout("vpt_table14", "per_task") == "per_task"
    assert report.table_layout("vpt_table1") == "group_means" and report.table_layout("table19") == "per_task"


def test_the_fraction_figures_average_tasks_and_shade_the_gap(tmp_path):
    from vptft import figures

    base = {"vpt_deep": lambda f: 40.0 + f / 10, "linear": lambda f: 30.0 + f / 5}
    rows = [
        {"task": task, "fraction": f, "strategy": s, "seed": seed, "test_top1": base[s](f) + offset + seed}
        for task, offset in (("a", 0.0), ("b", 10.0))
        for f in (20, 50)
        for s in base
        for seed in (0, 1)
    ]
    runs = pd.DataFrame(rows)
    average = figures.vpt_figure3(runs, ["vpt_deep", "linear"], tmp_path / "f3.png")
    assert average.loc[20, "vpt_deep"] == pytest.approx(42.0 + 5.0 + 0.5)  # mean over tasks and seeds
    assert (tmp_path / "f3.png").stat().st_size > 0
    means = figures.vpt_figure20(runs, ["vpt_deep", "linear"], tmp_path / "f20.png")
    assert len(means) == 2 * 2 * 2 and (means.seeds == 2).all()
    with pytest.raises(ValueError, match="compares vpt_deep"):
        figures.vpt_figure3(runs, ["linear"], tmp_path / "f3b.png")


def test_fgvc_final_runs_train_on_train_only_with_crops(tmp_path, monkeypatch):
    """A mini fine-grained task end to end: the fgvc manifest's final runs train on its train part (not train +
    val), on images decoded at 37 px and cropped to the backbone's 32."""
    from safetensors.torch import save_file

    from vptft.backbones.factory import create_backbone
    from vptft.selection import merge_sweep
    from vptft.splits import write_manifest
    from vptft.sweep import Job, run_final, run_sweep_chunk

    info = tasks.prepare(tasks.get_task("finestars_src"), str(tmp_path))
    manifest = build_manifest("finestars_src", "fgvc", regime_spec("fgvc", REGIMES), info, str(tmp_path))
    assert sum(manifest["class_counts"]["train"]) == 900 and sum(manifest["class_counts"]["val"]) == 100
    manifest["splits"] = {  # a few records of each part, so the test stays quick
        "train": {"train": manifest["splits"]["train"]["train"][:24]},
        "val": {"train": manifest["splits"]["val"]["train"][:8]},
        "trainval": {
            "train": manifest["splits"]["train"]["train"][:24] + manifest["splits"]["val"]["train"][:8]
        },
        "test": {"test": list(range(16))},
    }
    write_manifest(tmp_path / "manifest.json", manifest)
    torch.manual_seed(0)
    backbone = create_backbone("mini_vit", pretrained=False)
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(tmp_path / "bb.safetensors"))
    train = {
        "batch_size": 8, "epochs": 2, "min_steps": 0, "warmup_fraction": 0.0, "lr_scale_batch": 256,
        "normalization": "backbone", "head_init": "zero", "device": "cpu", "optimizer_behavior": "vpt_code",
        "precision": "fp32", "compile": False, "backbone_dropout": 0.0, "sweep_seed": 0,
        "sweep_chunk_size": None, "curve_points": 1,
    }  # fmt: skip
    spec = {
        "task": "finestars_src", "regime": "fgvc", "strategy": "full", "backbone": "mini_vit",
        "data_dir": str(tmp_path), "grid": {"lr": [0.001], "wd": [0.0]}, "train": train,
    }  # fmt: skip
    job = Job(spec, tmp_path / "manifest.json", tmp_path / "bb.safetensors")
    assert job.final_split == "train" and job.split("train").images.shape[-2:] == (37, 37)
    crops = []
    monkeypatch.setattr(data, "random_crop_flip", lambda x, size, g: crops.append(size) or x[..., :32, :32])
    rows = run_sweep_chunk(spec, tmp_path / "manifest.json", tmp_path / "bb.safetensors", tmp_path / "c0.csv")
    merge_sweep([tmp_path / "c0.csv"], tmp_path / "sweep.csv", expected_points=len(rows))
    [metrics] = run_final(
        spec,
        tmp_path / "manifest.json",
        tmp_path / "bb.safetensors",
        tmp_path / "sweep.csv",
        tmp_path / "r",
        [0],
    )
    assert metrics["final_split"] == "train" and metrics["n_train"] == 24  # the train part, not 32
    assert crops and set(crops) == {(32, 32)}  # every training batch cropped to the input size


def test_a_row_without_fgvc_runs_has_no_fgvc_wins():
    """vpt_table1's FGVC column shows the strategies the fgvc family trains; the others' cells stay empty."""
    rows = [
        {"task": task, "group": tasks.get_task(task).group, "strategy": strategy, "seed": 0, "test_top1": top1,
         "regime": "vtab1k", "tuned_pct": 1.0, "task_params": 1, "backbone_params": 10, "prompt_length": None,
         "capped": False, "capped_to": None, **report.regime_setting("vtab1k", 160)}
        for task, strategy, top1 in [
            ("source", "full", 40.0), ("source", "mixed", 45.0),
            ("finestars_src", "full", 20.0), ("finestars_src", "vpt_deep", 25.0), ("source", "vpt_deep", 30.0),
        ]
    ]  # fmt: skip
    table = report.vpt_table1(
        pd.DataFrame(rows), ["fgvc", "natural"], ["finestars_src", "source"], ["full", "vpt_deep", "mixed"]
    )
    assert table.loc["vpt_deep", "wins_fgvc"] == 1 and table.loc["mixed", "wins_natural"] == 1
    assert pd.isna(table.loc["mixed", "wins_fgvc"]) and pd.isna(table.loc["mixed", "mean_fgvc"])

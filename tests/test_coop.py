"""CoOp's 11 few-shot data sets (Adapt's CLIP experiment): the task registry against TFDS, the coop regime (k shots
for train, min(k, 4) for val, final runs on the shots), a fake FGVC-Aircraft folder, UCF101's middle frames,
ImageNet's class-name file, and the paper overlay's dry run of Adapt's Table 1."""

import numpy as np
import pytest

from conftest import ROOT
from vptft import report, study, tasks
from vptft.splits import build_manifest, family_of, regime_names, regime_spec
from vptft.tasks import coop

tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets is a declared dependency")

COOP = tasks.tasks_of("coop")
REGIMES = {"coop": {"shots": [1, 2, 16], "draws": 2, "val_per_class_max": 4}}


def test_eleven_tasks_with_coops_templates_and_installed_builders():
    assert len(COOP) == 11 and all(name in tasks.config_tasks("vtab") for name in COOP)
    templates = {name: tasks.get_task(name).prompt_template for name in COOP}
    assert templates["coop_eurosat"] == "a centered satellite photo of {}."
    assert (
        templates["coop_dtd"] == "{} texture."
        and templates["coop_food101"] == "a photo of {}, a type of food."
    )
    assert templates["coop_ucf101"] == "a photo of a person doing {}."
    for name in COOP:
        task = tasks.get_task(name)
        assert task.group == "coop" and study.in_family(name, "coop") and not study.in_family(name, "fewshot")
        if task.extra["builder"]:  # TFDS has the builder at that major version
            family, version = task.extra["builder"].split(":")
            builder = tfds.builder_cls(family.split("/")[0])
            configs = {c.name: str(c.version) for c in getattr(builder, "BUILDER_CONFIGS", [])}
            found = configs[family.split("/")[1]] if "/" in family else str(builder.VERSION)
            assert found.split(".")[0] == version.split(".")[0], (name, found)
    assert not study.in_family("cifar100", "coop") and not study.in_family("cub200", "coop")


def test_the_coop_regime_draws_k_shots_and_at_most_four_val_per_class(tmp_path):
    data_dir = _fake_aircraft(tmp_path, per_split=20)
    assert regime_names(REGIMES) == [f"coop{k}_draw{i}" for k in (1, 2, 16) for i in (0, 1)]
    assert family_of("coop16_draw1") == "coop"
    spec = regime_spec("coop16_draw1", REGIMES)
    assert spec == {"kind": "fewshot", "per_class": 16, "val_per_class": 4, "selection": "draw", "seed": 1,
                    "final_split": "train"}  # fmt: skip
    assert regime_spec("coop2_draw0", REGIMES)["val_per_class"] == 2  # min(k, 4)
    info = tasks.prepare(tasks.get_task("coop_fgvc_aircraft"), data_dir)
    manifest = build_manifest(
        "coop_fgvc_aircraft", "coop2_draw0", regime_spec("coop2_draw0", REGIMES), info, data_dir
    )
    assert manifest["class_counts"]["train"] == [2] * 100 and manifest["class_counts"]["val"] == [2] * 100
    big = build_manifest("coop_fgvc_aircraft", "coop16_draw0", spec, info, data_dir)
    assert big["missing_classes"]["train"] == list(range(100))  # 20 + 20 records per split: 0.4 per class
    five = {"coop": {"shots": [5], "draws": 1, "val_per_class_max": 4}}
    m5 = build_manifest("coop_fgvc_aircraft", "coop5_draw0", regime_spec("coop5_draw0", five), info, data_dir)
    assert set(m5["splits"]["test"]) == {"test"} and not {"test"} & set(m5["splits"]["train"])
    assert report.regime_setting("coop16_draw2") == {
        "size": None, "shots": 16, "selection": "random", "draw": 2, "fraction": None
    }  # fmt: skip


def _fake_aircraft(root, per_split=3):
    """FGVC-Aircraft's layout: variants.txt (100 names with spaces and slashes), a variant list per split."""
    from PIL import Image

    folder = coop.aircraft_dir(root)
    (folder / "images").mkdir(parents=True)
    variants = [f"Model {i}/{i + 1}" for i in range(100)]
    (folder / "variants.txt").write_text("\n".join(variants) + "\n")
    n = 0
    for split in ("train", "val", "test"):
        lines = []
        for j in range(per_split * 10):
            image = f"{n:07d}"
            pixels = np.random.default_rng(n).integers(0, 256, (8, 6, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "images" / f"{image}.jpg")
            lines.append(f"{image} {variants[(j * 7) % 100]}")
            n += 1
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return str(root)


def test_fgvc_aircraft_from_a_fake_manual_folder(tmp_path):
    data_dir = _fake_aircraft(tmp_path)
    task = tasks.get_task("coop_fgvc_aircraft")
    assert tasks.prepare(task, data_dir)["split_sizes"] == {"train": 30, "val": 30, "test": 30}
    assert tasks.load_labels(task, "val", data_dir)[:3].tolist() == [
        0,
        7,
        14,
    ]  # variant order of variants.txt
    images, labels = tasks.load_images(task, "test", [1, 2], data_dir)
    assert labels.tolist() == [7, 14] and all(im.shape == (8, 6, 3) and im.dtype == np.uint8 for im in images)
    assert tasks.class_names(task, data_dir)[1] == "Model 1/2"


def test_a_missing_aircraft_folder_says_what_to_fetch_and_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"variants.txt.*robots.ox.ac.uk/~vgg/data/fgvc-aircraft"):
        tasks.prepare(tasks.get_task("coop_fgvc_aircraft"), str(tmp_path))


def test_imagenets_class_names_come_from_the_file_coop_uses(tmp_path):
    task = tasks.get_task("coop_imagenet")
    path = tasks.tfds_prepare.manual_dir(tmp_path) / "imagenet_classnames.txt"
    with pytest.raises(FileNotFoundError, match=str(path)):
        coop.class_names(task, str(tmp_path))
    path.parent.mkdir(parents=True)
    path.write_text("n01440764 tench\nn01443537 goldfish\n")
    with pytest.raises(ValueError, match="2 class names, coop_imagenet has 1000"):
        coop.class_names(task, str(tmp_path))
    path.write_text("".join(f"n{i:08d} great white shark {i}\n" for i in range(1000)))
    assert tasks.class_names(task, str(tmp_path))[3] == "great white shark 3"
    assert tasks.class_names(tasks.get_task("coop_eurosat"), str(tmp_path))[0] == "Annual Crop Land"


def test_ucf101_images_are_each_clips_middle_frame(monkeypatch):
    clips = {i: np.stack([np.full((4, 5, 3), 10 * i + t, np.uint8) for t in range(5 + i)]) for i in range(3)}
    monkeypatch.setattr(coop.tfds_tasks, "data_source", lambda task, split, data_dir: {
        i: {"video": clip, "label": i} for i, clip in clips.items()})  # fmt: skip
    images, labels = tasks.load_images(tasks.get_task("coop_ucf101"), "train", [2, 0], "unused")
    assert labels.tolist() == [2, 0]
    assert (
        images[0][0, 0, 0] == 20 + 3 and images[1][0, 0, 0] == 2
    )  # frame 7 // 2 = 3 of clip 2, 5 // 2 of clip 0
    assert images[0].shape == (4, 5, 3)


def test_coop_tasks_on_tfds_mock_data_read_names_with_spaces(tmp_path):
    task = tasks.get_task("coop_oxford_pets")
    with tfds.testing.mock_data(num_examples=6, data_dir=str(tmp_path / "tfds")):
        names = coop.class_names(task, str(tmp_path))
        images, labels = tasks.load_images(task, "train", range(3), str(tmp_path))
    assert len(names) == 37 and all("_" not in n for n in names) and "american bulldog" in names
    assert len(images) == 3 and images[0].ndim == 3 and labels.max() < 37


def test_the_paper_overlay_dry_run_lists_exactly_adapt_table1s_runs(tmp_path):
    """config/paper-clip.yaml on the paper config: `results/adapt_table1.csv` asks for the five rows' final runs
    on each of the 11 data sets (and for no run of the main backbone), and the figure reads that table."""
    from overlays import merged
    from test_strategy_variants import trained_by_dry_run
    from vptft.config import validate_config

    configs = [f"{ROOT}/config/paper.yaml", f"{ROOT}/config/paper-clip.yaml"]
    config = merged(*configs)
    validate_config(config)
    weights = tmp_path / "resources" / "weights" / "open_clip_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.touch()  # the local CLIP file the dry run checks for (the jobs would read it)
    rows = set(config["tables"]["adapt_table1"]["strategies"])
    assert trained_by_dry_run(tmp_path, "results/adapt_table1.csv", configs) == {
        (t, s) for t in COOP for s in rows
    }
    assert study.family_runs(config, "coop") == {}  # the main backbone trains nothing on them
    assert len(study.family_regime_names(config, "coop")) == 15  # 5 shot counts x 3 draws


def test_adapt_table1_vs_paper_compares_the_11_task_mean_at_16_shots_only():
    import pandas as pd

    from vptft import published

    rows = []
    for shots in (4, 16):
        for strategy in ("zero_shot", "adapt[head=text,towers=both]", "coop"):
            rows.append({"shots": shots, "selection": "random", "strategy": strategy,
                         **{t: 70.0 + shots for t in COOP}, "mean_coop": 70.0 + shots})  # fmt: skip
    table = pd.DataFrame(rows).set_index(["shots", "selection", "strategy"])
    both = published.vs_paper("adapt_table1", table, "clip_b16_openai", tasks=COOP).set_index("strategy")
    vs = both[both.ours.notna()]
    assert sorted(vs.index) == [
        "adapt[head=text,towers=both]",
        "zero_shot",
    ]  # coop: a row Adapt did not publish
    reference = both[both.ours.isna()]  # the paper's rows this table does not run, for reference
    assert (
        set(reference.index) >= {"lamm", "vpt_deep[head=text,prompt_length=8]"}
        and reference.delta.isna().all()
    )
    assert vs.loc["zero_shot", "published"] == 58.86 and vs.loc["zero_shot", "delta"] == pytest.approx(
        86 - 58.86
    )
    assert (vs.shots == 16).all() and (vs.task == "mean_coop").all()
    fewer = published.vs_paper("adapt_table1", table.drop(columns=COOP[0]), "clip_b16_openai", tasks=COOP[1:])
    assert fewer.empty  # a mean over fewer data sets is not Adapt's average


@pytest.mark.parametrize(
    "name, expected",
    [
        ("coop_sun397", "outdoor apartment building"),  # '/a/apartment_building/outdoor', qualifier first
        ("coop_ucf101", "Apply Eye Makeup"),  # CamelCase split
        ("coop_caltech101", "airplane"),  # CoOp's singular
        ("coop_food101", "apple pie"),
    ],
)
def test_class_names_are_spelled_as_coops_captions_on_tfds_mock_data(tmp_path, name, expected):
    with tfds.testing.mock_data(num_examples=2, data_dir=str(tmp_path / "tfds")):
        names = tasks.class_names(tasks.get_task(name), str(tmp_path))
    assert expected in names and len(names) == tasks.get_task(name).num_classes
    assert not any("_" in n or n.startswith("/") for n in names)


def test_val_takes_at_most_four_per_class_of_a_larger_draw(tmp_path):
    from vptft import cost

    data_dir = _fake_aircraft(tmp_path, per_split=60)  # 6 records per class in each of train / val
    regimes = {"coop": {"shots": [8], "draws": 1, "val_per_class_max": 4}}
    info = tasks.prepare(tasks.get_task("coop_fgvc_aircraft"), data_dir)
    manifest = build_manifest(
        "coop_fgvc_aircraft", "coop8_draw0", regime_spec("coop8_draw0", regimes), info, data_dir
    )
    assert manifest["class_counts"]["train"] == [8] * 100 and manifest["class_counts"]["val"] == [4] * 100
    assert not manifest["missing_classes"]["val"] and manifest["spec"]["final_split"] == "train"
    config = {"regimes": regimes}
    assert cost.regime_sizes(config, "coop_fgvc_aircraft", "coop8_draw0") == (800, 400)
    assert cost.test_size("coop_imagenet") == 50000 and cost.test_size("coop_fgvc_aircraft") == 3333

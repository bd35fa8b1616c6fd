import os
import threading

import pytest
import torch
from tqdm import tqdm

# tqdm's default write lock includes a multiprocessing lock, shared by every process forked after it exists: a
# forked test process killed while holding it (mutation testing forks one per mutant and kills the slow ones)
# would leave every later one waiting on it forever. The tests' bars need only a lock per process.
tqdm.set_lock(threading.RLock())

# pytest-xdist workers share the cores: each in-process torch test gets its share (2 cores, 2 workers: 1 thread)
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // WORKERS))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# pytest-xdist hands the files to its workers in collection order (--no-loadscope-reorder): the longest first, each
# with its longest tests first, so the ~10 min smoke pass starts at once instead of running alone at the end.
SLOWEST_FILES = ("test_smoke.py", "test_workflow.py", "test_slurm.py", "test_interrupt.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        first = SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)
        return first, item.get_closest_marker("workflow") is None

    items.sort(key=rank)


@pytest.fixture
def mini_vit():
    from vptft.backbones.factory import create_backbone

    torch.manual_seed(0)
    return create_backbone("mini_vit", pretrained=False)


@pytest.fixture(scope="session")
def prepared_mini(tmp_path_factory):
    """Two mini tasks rendered once into a data dir: {task: info}."""
    from vptft import tasks

    data_dir = tmp_path_factory.mktemp("data")
    infos = {name: tasks.prepare(tasks.get_task(name), str(data_dir)) for name in ("newshapes_src", "digits")}
    return str(data_dir), infos


def write_digits_manifest(path, prepared_mini, n_test: int) -> None:
    """A digits manifest of 16 train / 8 val images and a test split of the first `n_test` test records."""
    from vptft.splits import build_manifest, regime_spec, write_manifest

    data_dir, infos = prepared_mini
    spec = regime_spec("vtab1k", {"vtab1k": {"n_train": 16, "n_val": 8}})
    manifest = build_manifest("digits", "vtab1k", spec, infos["digits"], data_dir)
    manifest["splits"]["test"] = {"test": list(range(n_test))}
    write_manifest(path, manifest)


def reduced_test_config(tasks, strategies, tables=("table1",)) -> dict:
    """The end-to-end test config cut down to some tasks, strategies and tables (vtab1k only, no analyses):
    what tests of one mechanism (resume, the cluster path) run."""
    import yaml

    with open(os.path.join(ROOT, ".test", "config", "config.yaml")) as f:
        config = yaml.safe_load(f)
    config["tasks"] = list(tasks)
    config["strategies"] = {k: config["strategies"][k] for k in strategies}
    config["tables"] = {k: {**config["tables"][k], "strategies": None} for k in tables}
    config["regimes"] = {"vtab1k": {k: config["regimes"]["vtab1k"][k] for k in ("n_train", "n_val")}}
    config.pop("analyses", None)
    config.pop("figures", None)
    return config


def spy_autocast(monkeypatch, module) -> list:
    """Record the precision of every `module._autocast(device, precision)` call (bf16 is a no-op on the CPU, so
    only the call shows that a forward asked for it)."""
    precisions, real = [], module._autocast

    def spy(device, precision="fp32"):
        precisions.append(precision)
        return real(device, precision)

    monkeypatch.setattr(module, "_autocast", spy)
    return precisions


# A pre-training run of seconds (vptft.pretrain), for the self-supervised objectives' tests: every failure
# threshold open, so a test sets the one it checks.
TINY_PRETRAIN = dict(
    n_train=256,
    n_heldout=64,
    epochs=3,
    batch_size=64,
    lr=0.002,
    weight_decay=0.05,
    warmup_epochs=0,
    seed=0,
    curve_points=3,
    min_heldout_top1=0.0,
    max_reconstruction_loss=0.95,
    min_knn_top1=0.0,
)

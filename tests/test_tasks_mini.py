import numpy as np
import pytest

from vptft import tasks
from vptft.tasks import mini

MINI = tasks.tasks_of("mini")


@pytest.mark.parametrize("name", MINI)
def test_mini_task_renders_deterministically_with_labels_in_range(name):
    task = tasks.get_task(name)
    first = mini.render_task(task)
    for images, labels in first.values():
        assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
        assert labels.min() >= 0 and labels.max() < task.num_classes
        assert len(np.unique(labels)) == task.num_classes  # every class appears
    assert not np.array_equal(first["train"][0][:50], first["test"][0][:50])  # splits are distinct streams
    if task.extra["kind"] == "digits":  # real images in a fixed order
        np.testing.assert_array_equal(first["test"][0], mini.render_task(task)["test"][0])
        return
    # the same drawing code and random stream again, on a prefix-sized render (labels are drawn first)
    args = (task.extra["kind"], task.extra["style"], task.num_classes, 100, mini.RENDER_SEED, task.name)
    again, other = mini.render(*args), mini.render(*args)
    np.testing.assert_array_equal(again[0], other[0])
    np.testing.assert_array_equal(again[1], other[1])


def test_quadrants_are_covered():
    quadrants = {}
    for name in MINI:
        task = tasks.get_task(name)
        quadrants.setdefault((task.task_disparity, task.domain), []).append(name)
    assert set(quadrants) == {("low", "source"), ("low", "shifted"), ("high", "source"), ("high", "shifted")}
    assert all(len(names) >= 2 for names in quadrants.values())
    assert "digits" in MINI


def test_source_set_is_large_and_balanced():
    images, labels = mini.render_source(240, seed=0)
    assert images.shape == (240, 32, 32, 3)
    assert len(mini.SOURCE_SHAPES) >= 10 and set(labels) == set(range(len(mini.SOURCE_SHAPES)))
    again, _ = mini.render_source(240, seed=0)
    other, _ = mini.render_source(240, seed=1)
    np.testing.assert_array_equal(images, again)
    assert not np.array_equal(images, other)


def test_digits_are_real_sklearn_images():
    splits = mini.render_task(tasks.get_task("digits"))
    assert len(splits["train"][1]) + len(splits["test"][1]) == 1797


def test_load_refuses_unprepared_task(tmp_path):
    with pytest.raises(FileNotFoundError, match="not prepared"):
        tasks.load_images(tasks.get_task("source"), "train", [0], str(tmp_path))

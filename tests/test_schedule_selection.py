"""Edges of the schedule and the selection that mutation testing found no test for: a run shorter than one
batch, evaluation epochs, a sweep missing a chunk's rows, a selected row beyond the configured grid."""

import pytest

from vptft import schedule, selection


def test_a_run_smaller_than_a_batch_takes_one_step_per_epoch():
    assert schedule.epochs_for(n_train=10, batch_size=64, epochs=4, min_steps=9) == 9
    assert schedule.epochs_for(n_train=200, batch_size=64, epochs=4, min_steps=9) == 4  # 4 steps an epoch


def test_eval_epochs_are_evenly_spaced_and_end_at_the_last():
    assert schedule.eval_epochs(10, 3) == {0, 4, 9}  # round(4.5) = 4
    assert schedule.eval_epochs(10, 1) == {9}
    assert schedule.eval_epochs(10, None) is None and schedule.eval_epochs(4, 4) is None


def _chunk(path, indices):
    selection.write_csv(path, [{"grid_index": i, "lr": 0.1 * (i + 1), "val_top1": 50 + i} for i in indices])
    return path


def test_a_sweep_missing_grid_points_is_refused_with_its_chunks(tmp_path):
    chunks = [_chunk(tmp_path / "chunk0.csv", [0, 1]), _chunk(tmp_path / "chunk1.csv", [2])]
    with pytest.raises(ValueError, match=r"hold 3 grid points, expected 4: .*chunk0\.csv, .*chunk1\.csv"):
        selection.merge_sweep(chunks, tmp_path / "sweep.csv", expected_points=4)
    assert not (tmp_path / "sweep.csv").exists()
    assert selection.merge_sweep(chunks, tmp_path / "sweep.csv", expected_points=3)["grid_index"] == "2"


def test_a_selected_row_beyond_the_grid_says_the_sweep_is_stale(tmp_path):
    chunks = [_chunk(tmp_path / "chunk0.csv", [0, 1, 2])]
    selection.merge_sweep(chunks, tmp_path / "sweep.csv")
    grid = {"lr": [0.1, 0.2]}  # two points: the selected row is index 2
    with pytest.raises(ValueError, match="is not grid point 2 of the configured grid"):
        selection.selected_point(tmp_path / "sweep.csv", grid)


def test_grid_size_is_the_product_of_the_value_counts():
    """The select rule expects this many sweep rows (its merge refuses fewer)."""
    assert selection.grid_size({"lr": [0.1, 0.2, 0.5], "wd": [0.0, 0.01], "prompt_length": [1]}) == 6

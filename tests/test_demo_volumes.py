"""The volume demo (python -m wsloss.demo.volumes, docs/DESIGN.md §10): its data and a quick run."""
import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("skimage", reason="the demo's strokes come with wsloss[demo] (pip install wsloss[demo])")

from wsloss.demo import volumes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_volume_scribbles_lie_on_three_slices_and_follow_the_ground_truth():
    scans = volumes.make_volumes(4, 16, 24, seed=3)
    drawn = scans.scribbles != volumes.IGNORE
    slices = drawn.any(dim=(0, 2, 3)).nonzero().flatten().tolist()
    assert slices == [4, 8, 12]
    assert torch.equal(scans.scribbles[drawn], scans.masks[drawn])
    assert set(scans.scribbles[drawn].unique().tolist()) == {0, 1, 2}


def test_volume_set_is_the_same_for_the_same_seed_and_differs_for_another():
    a, b, c = (volumes.make_volumes(2, 8, 16, seed) for seed in (5, 5, 6))
    assert torch.equal(a.scans, b.scans) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.scans, c.scans)


def test_organs_overlap_the_background_in_intensity():
    """A per-voxel threshold cannot segment the scans: the class intensities overlap."""
    scans = volumes.make_volumes(4, 16, 24, seed=0)
    background = scans.scans[:, 0][scans.masks == 0]
    organ = scans.scans[:, 0][scans.masks == 1]
    assert background.max() > organ.min()


def test_dice_counts():
    truth = torch.tensor([[0, 1, 1, 2]])
    predicted = torch.tensor([[0, 1, 2, 2]])
    assert volumes.dice(predicted, truth) == pytest.approx((2 * 1 / 3 + 2 * 1 / 3) / 2)


def test_quick_volume_demo_writes_every_row_over_the_seeds(tmp_path):
    done = subprocess.run([sys.executable, "-m", "wsloss.demo.volumes", "--quick", "--seeds", "2", "--out",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    assert list(results["rows"]) == ["pce", "pce + densecrf", "full"]
    for row in results["rows"].values():
        assert len(row["dice"]) == 2 and all(0 <= d <= 1 for d in row["dice"]) and row["sd"] is not None
    assert "| pce + densecrf | the same scribbles |" in (tmp_path / "results.md").read_text()


def test_volume_demo_refuses_an_unknown_setting(tmp_path):
    done = subprocess.run([sys.executable, "-m", "wsloss.demo.volumes", "--quick", "--set", "nope=1", "--out",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "unknown setting 'nope'" in done.stderr


def test_volume_benchmark_runs_a_tiny_case_and_writes_every_piece(tmp_path):
    script = os.path.join(ROOT, "benchmarks", "volumes.py")
    done = subprocess.run([sys.executable, script, "--depth", "6", "--size", "16", "--repeats", "1", "--peers",
                           "--json", str(tmp_path / "volumes.json")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "volumes.json") as f:
        results = json.load(f)
    pieces = [row["piece"] for row in results["rows"]]
    assert pieces[:7] == ["DenseCRFLoss", "NormalizedCutLoss", "KernelCutLoss", "QuadraticCRFLoss", "GridCRFLoss (6)",
                          "GridCRFLoss (26)", "EntropyLoss"]
    assert all(row["step_ms"] > 0 for row in results["rows"]) and results["peers"] == []
    assert 0.9 < results["exact_crop"]["labels_agree"] <= 1

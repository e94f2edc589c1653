"""The demo (python -m wsloss.demo) and the benchmark runner (python -m benchmarks)."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("skimage", reason="the demo's photographs need scikit-image (pip install wsloss[demo])")
pytest.importorskip("matplotlib", reason="the demo's figure needs matplotlib (pip install wsloss[demo])")

from wsloss import demo  # noqa: E402
from wsloss.demo import data, train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED_ROWS = ["full", "pce", "pce+densecrf", "pce+densecrf+entropy", "pce+ncut", "bbox-rect", "bbox-seg",
                 "tags-em-adapt"]
PNG = b"\x89PNG\r\n\x1a\n"


def _cli(*args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One --quick run of every row through the command line, as a user runs it."""
    out = tmp_path_factory.mktemp("demo")
    done = _cli("-m", "wsloss.demo", "--quick", "--no-progress", "--out", str(out), cwd=out)
    assert done.returncode == 0, done.stderr
    with open(out / "results.json") as f:
        return out, json.load(f), done.stdout


def test_quick_demo_table(quick_run):
    out, results, stdout = quick_run
    names = [row["name"] for row in results["rows"]]
    assert set(REQUIRED_ROWS) <= set(names) and names == demo.ROW_NAMES
    settings = results["settings"]
    for row in results["rows"]:
        assert 0.0 <= row["miou"] <= 1.0, row
        present = [v for v in row["class_iou"].values() if v is not None]
        assert set(row["class_iou"]) == set(data.CLASS_NAMES)
        assert row["miou"] == pytest.approx(sum(present) / len(present))
        assert row["share_of_full"] == pytest.approx(row["miou"] / results["rows"][0]["miou"])
        # every row trained: all its steps ran and its loss is finite and moved
        assert row["steps"] == settings["steps"]
        assert math.isfinite(row["loss_first"]) and math.isfinite(row["loss_last"])
        assert row["loss_first"] != row["loss_last"], row
        assert row["seconds"] > 0
    assert set(results["gap_recovered"]) == {"pce+densecrf", "pce+densecrf+entropy", "pce+ncut"}
    markdown = (out / "results.md").read_text()
    for name in names:
        assert f"| {name} |" in markdown
    assert markdown in stdout
    figure = (out / "demo.png").read_bytes()
    assert figure[:8] == PNG and len(figure) > 10_000


def test_quick_demo_learns(quick_run):
    """Even a dozen steps on 32x32 images beat a constant prediction (mIoU 1/K of background)."""
    _, results, _ = quick_run
    scores = {row["name"]: row["miou"] for row in results["rows"]}
    assert scores["full"] > 0.3, scores


def test_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        demo.run(out=str(tmp_path), quick=True, rows=["pce", "scribbles-magic"])
    with pytest.raises(ValueError, match="steps"):
        demo.run(out=str(tmp_path), quick=True, steps=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            demo.run(out=str(tmp_path), quick=True, device="cuda")
    done = _cli("-m", "wsloss.demo", "--quick", "--rows", "nope", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "rows must be" in done.stderr
    assert not (tmp_path / "results.json").exists()


def test_demo_one_row_on_device(tmp_path, device):
    results = demo.run(out=str(tmp_path), quick=True, device=device, rows=["pce+densecrf", "bbox-seg"],
                       progress=False)
    assert [row["name"] for row in results["rows"]] == ["pce+densecrf", "bbox-seg"]
    assert "gap_recovered" not in results  # needs the full and pce rows
    assert all(row["share_of_full"] is None for row in results["rows"])
    assert "| pce+densecrf | scribbles |" in (tmp_path / "results.md").read_text()
    assert all(math.isfinite(row["miou"]) for row in results["rows"])


def test_progress_in_a_log_is_plain_lines(tmp_path):
    """Not a terminal (a log file): one line per tenth of the steps, no carriage returns; run from
    the repository root, where wsloss/ is the source folder."""
    done = _cli("-m", "wsloss.demo", "--quick", "--rows", "full", "--out", str(tmp_path), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("full: step ")]
    assert len(progress) == 10 and progress[-1].startswith("full: step 60/60, loss ")


def test_missing_demo_dependencies_name_the_extra(tmp_path):
    done = _cli("-c", "import sys; sys.modules['skimage'] = None; import wsloss.demo", cwd=tmp_path)
    assert done.returncode == 1
    assert "needs scikit-image" in done.stderr and "pip install 'wsloss[demo]'" in done.stderr


def test_scribbles_are_drawn_widened_over_a_light_image():
    from wsloss.demo import report

    scribbles = torch.full((7, 7), data.IGNORE)
    scribbles[3, 3] = 0  # one background pixel: black
    picture = report._strokes(scribbles, np.zeros((7, 7, 3), dtype=np.uint8))
    drawn = (picture == 0).all(axis=2)
    assert drawn[2:5, 2:5].all() and drawn.sum() == 9
    assert (picture[~drawn] >= 150).all()


def test_data_annotations_follow_ground_truth():
    split = data.make_split(12, 48, seed=3, train=True)
    again = data.make_split(12, 48, seed=3, train=True)
    assert torch.equal(split.images, again.images) and torch.equal(split.scribbles, again.scribbles)
    assert split.images.min() >= 0 and split.images.max() <= 255
    drawn = split.scribbles != data.IGNORE
    assert torch.equal(split.scribbles[drawn], split.masks[drawn])  # strokes stay inside their object
    assert 0.005 < drawn.float().mean() < 0.08  # a few percent of the pixels
    for b in range(12):
        present = set(torch.unique(split.masks[b]).tolist()) | {0}
        assert set(torch.nonzero(split.tags[b]).flatten().tolist()) == present
        assert set(split.box_classes[b]) <= present
        assert set(torch.unique(split.scribbles[b][drawn[b]]).tolist()) <= present
        for (x0, y0, x1, y1), cls in zip(split.boxes[b], split.box_classes[b]):
            inside = split.masks[b, int(y0):int(y1), int(x0):int(x1)]
            assert (inside == cls).any()
            assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
        covered = torch.zeros(48, 48, dtype=torch.bool)
        for x0, y0, x1, y1 in split.boxes[b]:
            covered[int(y0):int(y1), int(x0):int(x1)] = True
        assert not (split.masks[b][~covered] > 0).any()  # every visible object pixel is in a box
    test = data.make_split(12, 48, seed=3, train=False)
    assert not torch.equal(test.images, split.images)


def test_miou_counts():
    truth = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    predicted = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    iou = train.class_iou(train.confusion(predicted, truth))
    assert iou[:2].tolist() == pytest.approx([3 / 4, 4 / 5])
    assert torch.isnan(iou[2:]).all()  # classes neither present nor predicted do not count


def test_benchmark_runner(tmp_path):
    # A budget no case reaches on a slow or busy machine: every case must be timed.
    done = _cli("-m", "benchmarks", "--sizes", "24,32", "--batches", "1,2", "--repeats", "2", "--device", "cpu",
                "--budget", "600", "--ops", "lattice_filter,DenseCRFLoss,dense_crf", "--out", str(tmp_path), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    rows = results["results"]
    timed = {(r["op"], r["backend"], r["size"], r["batch"]) for r in rows if "ms" in r}
    for op in ("lattice_filter", "DenseCRFLoss", "dense_crf"):
        for backend in ("cpu", "exact"):
            assert {(op, backend, s, b) for s in (24, 32) for b in (1, 2)} <= timed, (op, backend)
    assert all(r["ms"] > 0 and r["peak_mb"] >= 0 for r in rows if "ms" in r)
    assert (tmp_path / "results.png").read_bytes()[:8] == PNG
    assert "DenseCRFLoss" in done.stdout
    bad = _cli("-m", "benchmarks", "--ops", "nope", "--out", str(tmp_path), cwd=ROOT)
    assert bad.returncode == 2 and "unknown ops" in bad.stderr
    bad = _cli("-m", "benchmarks", "--device", "gpu", "--out", str(tmp_path), cwd=ROOT)
    assert bad.returncode == 2 and "--device" in bad.stderr
    elsewhere = _cli(os.path.join(ROOT, "benchmarks"), "--sizes", "16", "--batches", "1", "--repeats", "1",
                     "--device", "cpu", "--ops", "lattice_filter", "--out", str(tmp_path / "elsewhere"), cwd=tmp_path)
    assert elsewhere.returncode == 0, elsewhere.stderr

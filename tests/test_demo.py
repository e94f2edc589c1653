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
ROWS = ["full", "pce", "pce+entropy", "pce+densecrf", "pce+densecrf+entropy", "pce+ncut", "pce+kernelcut",
        "bbox-rect", "bbox-seg", "bbox-em-fixed", "tags-em-fixed", "tags-em-adapt", "semi-tags-em-adapt",
        "semi-bbox-em-fixed"]
PNG = b"\x89PNG\r\n\x1a\n"


def _cli(*args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One --quick run of every row with two training seeds, through the command line as a user runs it."""
    out = tmp_path_factory.mktemp("demo")
    done = _cli("-m", "wsloss.demo", "--quick", "--seeds", "2", "--no-progress", "--out", str(out), cwd=out)
    assert done.returncode == 0, done.stderr
    with open(out / "results.json") as f:
        return out, json.load(f), done.stdout


def test_quick_demo_rows(quick_run):
    out, results, stdout = quick_run
    assert [row["name"] for row in results["rows"]] == ROWS == demo.ROW_NAMES
    settings = results["settings"]
    warmup = round(settings["warmup_share"] * settings["steps"])
    for row in results["rows"]:
        assert row["warmup_steps"] == (warmup if row["name"].startswith("tags-") else 0)
        assert [run["seed"] for run in row["runs"]] == [0, 1]
        for run in row["runs"]:
            assert 0.0 <= run["miou"] <= 1.0, row
            present = [v for v in run["class_iou"].values() if v is not None]
            assert set(run["class_iou"]) == set(data.CLASS_NAMES)
            assert run["miou"] == pytest.approx(sum(present) / len(present))
            # every row trained: all its steps ran and its loss is finite and moved
            assert run["steps"] == settings["steps"] - row["warmup_steps"]
            assert math.isfinite(run["loss_first"]) and math.isfinite(run["loss_last"])
            assert run["loss_first"] != run["loss_last"], row
            assert run["seconds"] > 0
    markdown = (out / "results.md").read_text()
    for name in ROWS:
        assert f"| {name} |" in markdown
    assert markdown in stdout
    figure = (out / "demo.png").read_bytes()
    assert figure[:8] == PNG and len(figure) > 10_000


def test_quick_demo_mean_and_spread_over_seeds(quick_run):
    _, results, _ = quick_run
    full = results["rows"][0]["runs"]
    for row in results["rows"]:
        values = [run["miou"] for run in row["runs"]]
        assert row["runs"][0]["loss_first"] != row["runs"][1]["loss_first"], row  # the seeds train differently
        assert row["miou"] == pytest.approx(np.mean(values))
        assert row["miou_sd"] == pytest.approx(np.std(values, ddof=1))
        shares = [run["miou"] / ceiling["miou"] for run, ceiling in zip(row["runs"], full)]
        assert [run["share_of_full"] for run in row["runs"]] == pytest.approx(shares)
        assert row["share_of_full"] == pytest.approx(np.mean(shares))
        assert row["share_of_full_sd"] == pytest.approx(np.std(shares, ddof=1))
    scores = {row["name"]: [run["miou"] for run in row["runs"]] for row in results["rows"]}
    gaps = results["gap_recovered"]
    assert list(gaps) == [name for name in ROWS if name.startswith("pce+")]
    for name, gap in gaps.items():
        shares = [(r - p) / (f - p) for r, p, f in zip(scores[name], scores["pce"], scores["full"])]
        assert gap["runs"] == pytest.approx(shares) and gap["mean"] == pytest.approx(np.mean(shares))
    assert [c["seed"] for c in results["tag_classifier"]] == [0, 1]


def test_quick_demo_shows_the_papers(quick_run):
    out, results, _ = quick_run
    from wsloss.demo import report

    markdown = (out / "results.md").read_text()
    for row in results["rows"]:
        published = row["paper"]
        if row["name"] in report.PAPERS:
            miou, key = report.PAPERS[row["name"]]
            assert published["miou"] == miou and published["source"] == report.SOURCES[key]["cite"]
            assert published["share_of_full"] == pytest.approx(miou / report.SOURCES[key]["full"])
            assert f"| {published['miou']:.1f} | {100 * published['share_of_full']:.0f}% |" in markdown
        else:
            assert published is None
    # The papers' figures as printed in rloss's README (Table 1) and Papandreou et al.
    assert report.paper("pce+densecrf")["miou"] == 62.3 and report.paper("tags-em-adapt")["share_of_full"] == \
        pytest.approx(38.2 / 67.6)
    assert "mean ± sd of 2 seeds" in markdown and "in Tang et al.: pce+entropy 57%, pce+densecrf 90%" in markdown


def test_quick_demo_learns(quick_run):
    """Even 60 steps on 32x32 images beat a constant prediction (mIoU 1/K of background)."""
    _, results, _ = quick_run
    scores = {row["name"]: row["miou"] for row in results["rows"]}
    assert scores["full"] > 0.3, scores


def _tags_only(split):
    """The split with every pixel-level annotation removed: a row that reads one fails."""
    return split._replace(masks=None, scribbles=None, boxes=None, box_classes=None)


@pytest.mark.parametrize("name", ["tags-em-fixed", "tags-em-adapt"])
def test_tags_rows_never_see_pixel_labels(name):
    split = data.make_split(16, 32, seed=5, train=True)
    row = next(row for row in train.make_rows(demo.SETTINGS) if row.name == name)
    assert row.annotations == ("tags",) and row.targets is None and row.warmup
    strong = train.strong_images(16, row.strong_share, 0)
    assert not strong.any()
    assert set(train._annotations(row, split, torch.device("cpu"), strong)) == {"tags"}
    seen = []
    loss = row.loss
    row.loss = lambda logits, batch: seen.append(batch) or loss(logits, batch)
    blind = _tags_only(split)
    classifier = train.tag_classifier(blind, 3, 4, 1e-3, torch.device("cpu"), seed=0, progress=False)
    trained = train.train_row(row, blind, 3, 4, 1e-3, torch.device("cpu"), seed=0, progress=False,
                              warmup=classifier["net"].state_dict())
    assert len(trained["losses"]) == 3 and len(seen) == 3
    for batch in seen:
        assert batch.masks is None and batch.scribbles is None and batch.boxes is None and batch.targets is None
        assert batch.strong is None and batch.tags is not None and batch.tags.dtype == torch.bool


@pytest.mark.parametrize("name", ["semi-tags-em-adapt", "semi-bbox-em-fixed"])
def test_semi_rows_mix_strong_and_weak_images(name):
    split = data.make_split(40, 32, seed=6, train=True)
    row = next(row for row in train.make_rows(demo.SETTINGS) if row.name == name)
    assert row.strong_share == 0.1 and row.strong_batch_share == 0.5 and not row.warmup
    strong = train.strong_images(40, row.strong_share, data_seed=0)
    assert strong.sum() == 4 and torch.equal(strong, train.strong_images(40, row.strong_share, data_seed=0))
    given = train._annotations(row, split, torch.device("cpu"), strong)
    assert set(given) == {"masks", "strong", "tags" if "tags" in name else "boxes"}
    assert torch.equal(given["masks"][strong], split.masks[strong])
    assert (given["masks"][~strong] == data.IGNORE).all()  # no pixel of a weak image's mask
    draws = train._batches(40, 8, strong, row.strong_batch_share, torch.Generator().manual_seed(0))
    for _ in range(20):
        index, _ = next(draws)
        assert strong[index].sum() == 4  # a fixed proportion of every batch
    seen = []
    loss = row.loss
    row.loss = lambda logits, batch: seen.append(batch) or loss(logits, batch)
    train.train_row(row, split, 2, 8, 1e-3, torch.device("cpu"), seed=0, progress=False)
    assert all(int(batch.strong.sum()) == 4 and batch.scribbles is None for batch in seen)


def test_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        demo.run(out=str(tmp_path), quick=True, rows=["pce", "scribbles-magic"])
    with pytest.raises(ValueError, match="steps"):
        demo.run(out=str(tmp_path), quick=True, steps=0)
    with pytest.raises(ValueError, match="seeds"):
        demo.run(out=str(tmp_path), quick=True, seeds=0)
    with pytest.raises(ValueError, match="overrides must name"):
        demo.run(out=str(tmp_path), quick=True, overrides={"crf_wieght": 1.0})
    with pytest.raises(ValueError, match="strong_share"):
        demo.run(out=str(tmp_path), quick=True, overrides={"strong_share": 1.5})
    with pytest.raises(TypeError, match="crf_weight"):
        demo.run(out=str(tmp_path), quick=True, overrides={"crf_weight": "2"})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            demo.run(out=str(tmp_path), quick=True, device="cuda")
    done = _cli("-m", "wsloss.demo", "--quick", "--rows", "nope", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "rows must be" in done.stderr
    done = _cli("-m", "wsloss.demo", "--quick", "--set", "crf_weight", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "--set takes NAME=NUMBER" in done.stderr
    assert not (tmp_path / "results.json").exists()


def test_validation_split_comes_from_the_training_images(tmp_path):
    train_split = data.make_split(64, 32, seed=0, train=True)
    kept, held_out = data.split_off(train_split, 16)
    assert torch.equal(held_out.images, train_split.images[48:]) and kept.images.shape[0] == 48
    assert held_out.boxes == train_split.boxes[48:]
    results = demo.run(out=str(tmp_path), quick=True, rows=["full"], validation=True, progress=False,
                       overrides={"lr": 1e-3})
    assert results["settings"]["validation"] and results["settings"]["test_images"] == 16
    assert results["settings"]["lr"] == 1e-3
    assert "validation images" in (tmp_path / "results.md").read_text()


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

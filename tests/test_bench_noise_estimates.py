"""The bench's noise-estimate figures and its open-set setting, on a tiny synthetic
workspace (clustered features, no images, methods run in this process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from noisyclean.bench import FASHION_MNIST_CLASSES
from noisyclean.bench.methods import (
    METHODS,
    Job,
    NoiseEstimate,
    Workspace,
    flagged_share,
    joint_estimate,
    noise_figures,
    true_class_rates,
)
from noisyclean.bench.noise import NoiseSpec, apply_noise, parse_noise
from noisyclean.bench.openset import CLEAN_VIEW, clean_view, held_out_classes, openset_view
from noisyclean.bench.outliers import DEFAULT_PAIRS, parse_pair
from noisyclean.bench.runner import (
    BenchConfig,
    _jobs,
    _run_job,
    _summarise,
    prepare_workspace,
)

CLASSES = sorted(FASHION_MNIST_CLASSES)
PER_CLASS = 30
NOISE_FIGURES = ("noise_est", "noise_true", "noise_err", "class_err_max")
TINY = {"confidence": {"folds": 2, "epochs": 2}, "train": {"epochs": 1, "device": "cpu"}}


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, true class indices into CLASSES, train mask): 10 well-apart clusters."""
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    true = np.repeat(np.arange(k), PER_CLASS)
    centres = rng.normal(size=(k, 16)) * 4
    x = (centres[true] + rng.normal(size=(len(true), 16))).astype(np.float32)
    train = np.ones(len(true), dtype=bool)
    for c in range(k):
        train[np.flatnonzero(true == c)[: PER_CLASS // 3]] = False
    return x, true, train


def _run(work: Path, method: str, tag: str, seed: int = 0, view: str = "") -> dict:
    job = Job(method, str(work), tag, seed, view=view, **TINY)
    return METHODS[method].run(Workspace.load(work, view), job)


# ---------------------------------------------------------------- figures


def test_noise_figures_are_estimate_truth_and_worst_class() -> None:
    given = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    wrong = np.array([1, 0, 0, 0, 1, 1, 0, 0, 0, 0], dtype=bool)
    np.testing.assert_allclose(true_class_rates(given, wrong, 4)[:3], [0.25, 1.0, 0.0])
    assert np.isnan(true_class_rates(given, wrong, 4)[3])  # no row given class 3
    est = NoiseEstimate(0.25, np.array([0.5, 0.5, 0.1, 0.9]), expected_precision=0.8)
    fig = noise_figures(est, given, wrong, 4)
    assert fig["noise_true"] == pytest.approx(0.3)
    assert fig["noise_err"] == pytest.approx(0.25 - 0.3)
    # |0.5 - 0.25|, |0.5 - 1|, |0.1 - 0|; class 3 has no rows and does not count.
    assert fig["class_err_max"] == pytest.approx(0.5)
    assert fig["expected_precision"] == 0.8
    assert "expected_precision" not in noise_figures(
        NoiseEstimate(0.3, est.per_class), given, wrong, 4
    )


def test_flagged_share_and_joint_estimate() -> None:
    given = np.array([0, 0, 1, 1, 1, 1])
    flagged = np.array([1, 0, 1, 0, 0, 0], dtype=bool)
    est = flagged_share(flagged, given, 3)
    assert est.overall == pytest.approx(2 / 6)
    np.testing.assert_allclose(est.per_class, [0.5, 0.25, 0.0])
    joint = np.array([[0.3, 0.1], [0.0, 0.6]])  # P(given = i, true = j)
    est = joint_estimate(joint)
    assert est.overall == pytest.approx(0.1)
    np.testing.assert_allclose(est.per_class, [0.25, 0.0])


# ---------------------------------------------------------------- open set


def test_openset_holds_out_the_outlier_bench_pair_and_plants_exactly_rate() -> None:
    names = np.array(CLASSES)[np.repeat(np.arange(10), 50)]
    train = np.tile(np.arange(50) < 40, 10)
    held = held_out_classes(CLASSES)
    assert held == parse_pair(DEFAULT_PAIRS[0]) == ["Shirt", "Sandal"]
    view = openset_view(names, train, 0.02, seed=3)
    assert view.classes == sorted(set(CLASSES) - set(held)) and len(view.classes) == 8
    kept = names[view.rows]
    planted = view.planted
    # Every in-set train row is kept; the planted rows are the only held-out ones.
    assert (view.train & ~planted).sum() == 8 * 40
    assert np.isin(kept[planted], held).all() and not np.isin(kept[~planted], held).any()
    assert planted.sum() == round(0.02 * view.train.sum()) == 7
    assert not (planted & ~view.train).any()  # test rows are in-set rows only
    assert (~view.train).sum() == 8 * 10
    # Wrong labels are exactly the planted rows; their labels are in-set classes.
    np.testing.assert_array_equal(view.labels != view.true, planted)
    assert ((view.labels >= 0) & (view.labels < 8)).all()
    np.testing.assert_array_equal(np.array(view.classes)[view.true[~planted]], kept[~planted])
    # Seeded: the same seed plants the same rows with the same labels.
    again = openset_view(names, train, 0.02, seed=3)
    np.testing.assert_array_equal(again.rows, view.rows)
    np.testing.assert_array_equal(again.labels, view.labels)
    clean = clean_view(names, train)
    assert not np.isin(names[clean.rows], held).any() and len(clean.rows) == 8 * 50
    np.testing.assert_array_equal(clean.labels, clean.true)


def test_openset_spec_parses_and_is_not_a_label_flip() -> None:
    spec = parse_noise("openset:0.02")
    assert spec == NoiseSpec("openset", 0.02) and str(spec) == "openset:0.02"
    with pytest.raises(ValueError, match=r"\(0, 0.5\)"):
        parse_noise("openset:0")
    with pytest.raises(ValueError, match="changes which rows"):
        apply_noise(spec, np.zeros(4, dtype=np.int64), 2, seed=0)


def test_plan_runs_clean_methods_on_the_in_set_rows_for_openset_and_maps_them() -> None:
    noises = (parse_noise("symmetric:0.2"), parse_noise("openset:0.02"))
    config = BenchConfig(noises=noises, seeds=1)
    jobs = _jobs(config, Path("work"))
    opens = [j for j in jobs if j.tag == "openset-0.02-s0"]
    assert opens and all(j.view == "openset-0.02-s0" for j in opens)
    assert all(j.view == "" for j in jobs if j.tag == "symmetric-0.2-s0")
    clean = [(j.method, j.view) for j in jobs if not j.tag]
    for method in ("proxy-anchor-clean", "raw-features"):
        assert (method, "") in clean and (method, CLEAN_VIEW) in clean
    runs = [
        {"method": "raw-features", "noise": "", "seed": 0, "view": "", "retrieval": {"r": 0.5}},
        {
            "method": "raw-features",
            "noise": "",
            "seed": 0,
            "view": CLEAN_VIEW,
            "retrieval": {"r": 0.7},
        },
    ]
    summary = _summarise(runs, config)
    got = dict(zip(summary["noise"], summary["mean"], strict=True))
    assert got == {"symmetric:0.2": 0.5, "openset:0.02": 0.7}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, true, train = _data()
    work = tmp_path_factory.mktemp("bench") / "work"
    views = prepare_workspace(
        work,
        x,
        true,
        train,
        CLASSES,
        (parse_noise("symmetric:0.2"), parse_noise("openset:0.05")),
        1,
    )
    assert views["openset-0.05-s0"]["classes"] == 8 and views["openset-0.05-s0"]["planted"] > 0
    assert views[CLEAN_VIEW]["planted"] == 0
    return work


def test_every_detector_reports_its_noise_estimate(workspace: Path) -> None:
    tag = parse_noise("symmetric:0.2").tag(0)
    ws = Workspace.load(workspace)
    y = ws.noisy(tag)
    tr = ws.train
    truth = float((y != ws.true)[tr].mean())
    assert truth == pytest.approx(round(0.2 * tr.sum()) / tr.sum())
    for method in ("noisyclean-confidence", "knn-vote", "cleanlab", "smooth-proxy-anchor"):
        det = _run(workspace, method, tag)["detection"]
        assert set(NOISE_FIGURES) <= set(det), method
        assert det["noise_true"] == pytest.approx(truth)
        assert det["noise_err"] == pytest.approx(det["noise_est"] - det["noise_true"])
        assert 0.0 <= det["class_err_max"] <= 1.0
        assert ("expected_precision" in det) == method.startswith(("noisyclean", "smooth")), method
        if method == "knn-vote":  # the flagged share
            assert det["noise_est"] == pytest.approx(det["flagged"] / tr.sum())


def test_openset_runs_every_method_and_counts_the_planted_rows(workspace: Path) -> None:
    tag = parse_noise("openset:0.05").tag(0)
    ws = Workspace.load(workspace, tag)
    with np.load(workspace / f"view-{tag}.npz") as v:
        rows, planted = v["rows"], v["true"] < 0
    assert ws.n_classes == 8 and len(ws.true) == len(rows)
    assert ws.features.shape == (len(rows), 16)
    y = ws.noisy(tag)
    np.testing.assert_array_equal(y != ws.true, planted)
    truth = planted[ws.train].mean()
    assert truth == pytest.approx(round(0.05 * ws.train.sum()) / ws.train.sum())
    results = {}
    for method in ("noisyclean-confidence", "knn-vote", "cleanlab", "smooth-proxy-anchor"):
        results[method] = _run(workspace, method, tag, view=tag)
        det = results[method]["detection"]
        assert det["noise_true"] == pytest.approx(truth), method
        assert det["noise_err"] == pytest.approx(det["noise_est"] - truth), method
        assert 0.0 <= det["auroc"] <= 1.0
    for method in ("proxy-anchor", "multi-similarity"):
        results[method] = _run(workspace, method, tag, view=tag)
    for method in ("proxy-anchor-clean", "raw-features"):
        results[method] = _run(workspace, method, "", view=CLEAN_VIEW)
    for method in ("smooth-proxy-anchor", "proxy-anchor", "multi-similarity", "raw-features"):
        assert 0.0 <= results[method]["retrieval"]["recall@1"] <= 1.0, method
    # Well-apart clusters: the raw features retrieve the in-set test rows' own class.
    assert results["raw-features"]["retrieval"]["recall@1"] > 0.9
    json.dumps(results)  # what the worker prints


def test_worker_process_sees_the_openset_view(workspace: Path) -> None:
    tag = parse_noise("openset:0.05").tag(0)
    result = _run_job(Job("knn-vote", str(workspace), tag, 0, view=tag, **TINY))
    assert "error" not in result, result
    with np.load(workspace / f"view-{tag}.npz") as v:
        planted = (v["true"] < 0)[v["train"]]
    assert result["detection"]["noise_true"] == pytest.approx(planted.mean())
    assert result["cost"]["seconds"] >= 0

"""The human-noise matrix (benchmarks/human_noise_matrix.py) and the committed
CIFAR-10N matrix the bench injects as ``transition:benchmarks/noise/cifar10n-random.csv``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from noisyclean.bench import FASHION_MNIST_CLASSES
from noisyclean.bench.noise import apply_noise, parse_noise

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "human_noise_matrix.py"
COMMITTED = ROOT / "benchmarks" / "noise" / "cifar10n-random.csv"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("human_noise_matrix", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


human = _load()


def _script(labels: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(labels), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _labels(path: Path) -> pd.DataFrame:
    # 3 images of class 0 and 2 of class 3; worker labels chosen by hand.
    frame = pd.DataFrame(
        {
            "clean_label": [0, 0, 0, 3, 3],
            "aggre_label": [0, 0, 0, 3, 3],
            "random_label1": [0, 1, 0, 5, 3],
            "random_label2": [0, 0, 0, 5, 3],
            "random_label3": [2, 0, 0, 3, 3],
            "img_index": [0, 1, 2, 3, 4],
        }
    )
    frame.to_csv(path, index=False)
    return frame


def test_counts_pool_the_three_workers(tmp_path: Path) -> None:
    _labels(tmp_path / "labels.csv")
    counts = human.human_counts(human.read_labels(tmp_path / "labels.csv"))
    assert counts.sum() == 15
    assert counts[0, 0] == 7 and counts[0, 1] == 1 and counts[0, 2] == 1
    assert counts[3, 3] == 4 and counts[3, 5] == 2


def test_written_matrix_is_a_transition_spec_in_the_data_order(tmp_path: Path) -> None:
    clean = np.repeat(np.arange(10), 4)
    workers = np.tile(clean, (3, 1))
    workers[0, clean == 3] = 5  # one worker calls every cat a dog
    pd.DataFrame(
        {"clean_label": clean, **{w: workers[i] for i, w in enumerate(human.WORKERS)}}
    ).to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "matrix.csv"
    done = _script(tmp_path / "labels.csv", out)
    assert done.returncode == 0, done.stderr
    spec = parse_noise(f"transition:{out}")
    assert spec.rate == pytest.approx(1 / 3 / 10)
    classes = sorted(FASHION_MNIST_CLASSES)
    matrix = spec.load_matrix(classes)
    dress, sandal = classes.index("Dress"), classes.index("Sandal")  # CIFAR-10's cat, dog
    expected = np.eye(10)
    expected[dress, dress], expected[dress, sandal] = 2 / 3, 1 / 3
    np.testing.assert_allclose(matrix, expected, atol=1e-15)


def test_a_class_without_images_is_refused(tmp_path: Path) -> None:
    _labels(tmp_path / "labels.csv")
    done = _script(tmp_path / "labels.csv", tmp_path / "m.csv")
    assert done.returncode != 0
    assert "no images of class 1 (automobile)" in done.stderr
    assert not (tmp_path / "m.csv").exists()


def test_bad_labels_file_is_one_line(tmp_path: Path) -> None:
    frame = _labels(tmp_path / "labels.csv")
    frame.loc[3, "random_label2"] = 11
    frame.to_csv(tmp_path / "labels.csv", index=False)
    done = _script(tmp_path / "labels.csv", tmp_path / "m.csv")
    assert done.returncode != 0
    assert done.stderr.strip() == f"{tmp_path / 'labels.csv'}: row 5 has a label outside 0-9"
    assert not (tmp_path / "m.csv").exists()


def test_committed_matrix_loads_in_the_bench_order_and_flips_like_people() -> None:
    spec = parse_noise(f"transition:{COMMITTED}")
    # CIFAR-10N's individual workers are wrong about 17-18% of the time.
    assert 0.12 < spec.rate < 0.25
    classes = sorted(FASHION_MNIST_CLASSES)  # the bench's order: sorted names
    matrix = spec.load_matrix(classes)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-9)
    official = [classes.index(name) for name in FASHION_MNIST_CLASSES]
    # In the official order it is CIFAR-10's matrix: cat (3) goes to dog (5) more than
    # to anything else, and automobile (1) to truck (9).
    by_index = matrix[np.ix_(official, official)]
    assert np.argsort(by_index[3])[-2] == 5
    assert np.argsort(by_index[1])[-2] == 9
    # Injected on a class-balanced set, the flips follow the matrix.
    true = np.repeat(np.arange(10), 3000)
    noisy = apply_noise(spec, true, 10, seed=0, classes=classes)
    observed = np.zeros((10, 10))
    np.add.at(observed, (true, noisy), 1)
    np.testing.assert_allclose(observed / 3000, matrix, atol=0.03)

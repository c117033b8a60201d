"""The pipeline: each command's work from files to results, and the lazy public API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SmallSet, feature_config, write_csv

from noisyclean.artifacts import read_conf, write_conf
from noisyclean.configs import ConfidenceConfig
from noisyclean.errors import NoisyCleanError
from noisyclean.features import Features
from noisyclean.manifest import Manifest, load_manifest
from noisyclean.pipeline import score_manifest, train_auroc

QUICK = ConfidenceConfig(epochs=3, hidden=64)


def test_score_manifest_keeps_unusable_rows(
    small_set: SmallSet,
    small_features: tuple[Manifest, Features],
    feature_cache: Path,
    tmp_path: Path,
) -> None:
    # Absolute paths to the session's images: their features are already in the cache.
    rows = [{**r, "path": str(small_set.root / r["path"])} for r in small_set.rows]
    (tmp_path / "broken.png").write_text("not an image")
    rows.insert(3, {"id": "gone", "path": "gone.png", "label": "Bag", "split": "train"})
    rows.insert(7, {"id": "broken", "path": "broken.png", "label": "Coat", "split": "train"})
    manifest = load_manifest(write_csv(tmp_path / "m.csv", rows))
    result = score_manifest(manifest, features=feature_config(feature_cache), config=QUICK)
    write_conf(tmp_path / "conf.parquet", result.conf)
    t = pd.read_parquet(tmp_path / "conf.parquet")
    assert t["id"].tolist() == [r["id"] for r in rows]
    assert t["status"].tolist()[3] == "missing" and t["status"].tolist()[7] == "unreadable"
    assert result.reasons.keys() == {7}
    bad = t["status"] != "ok"
    assert t.loc[bad, "confidence"].isna().all() and t.loc[bad, "pred_label"].isna().all()
    assert t.loc[bad, "top_confidences"].isna().all() and (t.loc[bad, "fold"] == -1).all()
    assert t.loc[~bad, "confidence"].notna().all()
    assert result.computed == 1  # the broken file; every other image came from the cache
    assert len(result.flag_rows) == int(((t["status"] == "ok") & (t["split"] == "train")).sum())
    assert result.auroc is not None and 0 <= result.auroc <= 1
    back = read_conf(tmp_path / "conf.parquet")
    assert np.array_equal(back.top_scores, result.conf.top_scores)
    assert np.array_equal(back.top_classes, result.conf.top_classes)


@pytest.mark.parametrize("usable", [0, 1, 2])
def test_too_few_usable_train_rows_is_one_line(
    small_set: SmallSet, feature_cache: Path, tmp_path: Path, usable: int
) -> None:
    """One usable train row crashed the cross-fitting (All-NaN slice); say what is needed."""
    rows = [{**r, "path": str(small_set.root / r["path"])} for r in small_set.rows]
    train = [r for r in rows if r["split"] == "train"][:usable]
    gone = [{"id": f"gone{i}", "path": f"gone{i}.png", "label": "Bag"} for i in range(3)]
    test = [r for r in rows if r["split"] == "test"][:4]
    manifest = load_manifest(write_csv(tmp_path / "m.csv", [*train, *gone, *test]))
    with pytest.raises(NoisyCleanError, match=rf"{usable} usable train row") as err:
        score_manifest(manifest, features=feature_config(feature_cache), config=QUICK)
    assert "at least --folds (5) usable train rows, in at least 2 classes" in str(err.value)
    assert "\n" not in str(err.value)


def test_train_auroc_counts_usable_train_rows_only(tmp_path: Path) -> None:
    for name in "abcd":
        (tmp_path / f"{name}.png").write_bytes(b"")
    rows = [
        {"path": "a.png", "label": "x", "true_label": "y", "split": "train"},
        {"path": "b.png", "label": "x", "true_label": "x", "split": "train"},
        {"path": "c.png", "label": "y", "true_label": "y", "split": "test"},
        {"path": "gone.png", "label": "y", "true_label": "x", "split": "train"},
        {"path": "d.png", "label": "y", "true_label": "y", "split": "train"},
    ]
    m = load_manifest(write_csv(tmp_path / "m.csv", rows))
    # The wrong row scores below the clean ones except the test and the missing rows:
    # counted, those two would pull the AUROC down; they must not count.
    scores = np.array([0.5, 0.1, 0.9, 0.0, 0.2])
    assert train_auroc(scores, m) == 1.0
    no_truth = load_manifest(
        write_csv(
            tmp_path / "n.csv", [{"path": "a.png", "label": "x"}, {"path": "b.png", "label": "y"}]
        )
    )
    assert train_auroc(np.zeros(2), no_truth) is None


def test_import_noisyclean_is_cheap_and_exports_the_api() -> None:
    code = (
        "import sys, noisyclean\n"
        "assert 'torch' not in sys.modules and 'pandas' not in sys.modules, 'heavy import'\n"
        "assert callable(noisyclean.embed_images) and callable(noisyclean.score_manifest)\n"
        "assert 'train_run' in dir(noisyclean)\n"
        "import os; assert 'OMP_WAIT_POLICY' not in os.environ, 'global side effect'\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr


def test_importing_the_cli_loads_no_torch() -> None:
    code = (
        "import sys, noisyclean.cli\n"
        "heavy = [m for m in ('torch', 'torchvision', 'faiss', 'open_clip') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_candidates_are_read_once_for_a_hash_and_a_thumbnail(tmp_path: Path) -> None:
    from PIL import Image

    from noisyclean.pipeline import _read_candidates
    from noisyclean.pixel_match import SIDE

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes((tmp_path / "a.png").read_bytes())
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "other.png").write_bytes(b"")
    names = ["a.png", "b.png", "broken.png", "gone.png", "other.png"]
    rows = [{"path": p, "label": "xy"[i % 2]} for i, p in enumerate(names)]
    m = load_manifest(write_csv(tmp_path / "m.csv", rows), check_files=False)
    stages: list[tuple[str, int, int]] = []
    keys, read, thumbs = _read_candidates(
        m, np.array([0, 1, 2, 3]), progress=lambda *a: stages.append(a)
    )
    # Byte-identical files share a key; a file that can't be read has its own; a row
    # that is not a candidate is not read at all.
    assert (keys[0] == keys[1]).all() and len({tuple(k) for k in keys.tolist()}) == 4
    assert read.tolist() == [0, 1] and thumbs.shape == (2, SIDE, SIDE)
    assert (thumbs[0] == thumbs[1]).all() and thumbs.dtype == np.uint8
    assert stages[0] == ("images", 0, 4) and stages[-1] == ("images", 4, 4)

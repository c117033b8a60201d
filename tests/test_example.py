"""The README's main job on the committed example, through the real command and backbone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLE_MANIFEST

pytestmark = pytest.mark.slow

#: Floor from the issue; a faiss 10-NN vote on these features reaches about 0.96.
MIN_AUROC = 0.94


def test_score_on_the_committed_example(tmp_path: Path, feature_cache: Path) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    out = tmp_path / "conf.parquet"
    command = [sys.executable, "-m", "noisyclean", "score", str(EXAMPLE_MANIFEST)]
    command += ["-o", str(out), "--backbone", "efficientnet-lite0", "--image-size", "112"]
    command += ["--cache-dir", str(feature_cache)]
    proc = subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.search(
        r"AUROC of 1 - confidence against true_label \(usable train rows\): ([0-9.]+)",
        proc.stdout,
    )
    assert found, proc.stdout
    printed = float(found.group(1))
    assert printed >= MIN_AUROC
    assert "1500 rows" in proc.stdout and "10 classes" in proc.stdout

    df = pd.read_parquet(out)
    manifest = pd.read_csv(EXAMPLE_MANIFEST, dtype=str)
    assert df["id"].tolist() == manifest["id"].tolist()
    assert (df["status"] == "ok").all()
    assert (df["label"] != df["true_label"]).sum() == 200
    train = df[df["split"] == "train"]
    wrong = (train["label"] != train["true_label"]).to_numpy()
    recomputed = metrics.roc_auc_score(wrong, 1.0 - train["confidence"].to_numpy(np.float64))
    assert recomputed >= MIN_AUROC
    assert abs(recomputed - printed) <= 0.0005 + 1e-9
    meta = pq.read_schema(out).metadata
    assert meta[b"image_size"] == b"112" and meta[b"backbone"] == b"efficientnet-lite0"
    assert (df["fold"] == -1).sum() == (df["split"] == "test").sum() == 500


def test_run_on_the_committed_example(tmp_path: Path, feature_cache: Path) -> None:
    """The README's first command: the whole loop, then a rerun that skips every stage."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "noisyclean", "run", str(EXAMPLE_MANIFEST), "-o", str(out)]
    command += ["--backbone", "efficientnet-lite0", "--image-size", "112"]
    command += ["--cache-dir", str(feature_cache)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    texts = []
    for _ in range(2):
        proc = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        texts.append(proc.stdout)
    first, again = texts
    page = (out / "review.html").resolve().as_uri()
    assert f"review page: {page}" in " ".join(first.split())
    for name in ("conf.parquet", "suspects.parquet", "duplicates.parquet", "stages.json"):
        assert (out / name).is_file(), name
    assert "Phase 2 suspicion" in first and "near-duplicate groups" in first
    assert again.count("unchanged since the last run, skipped") == 3
    suspects = pd.read_parquet(out / "suspects.parquet")
    assert len(suspects) == 1500 and suspects["is_suspect"].any()

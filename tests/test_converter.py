"""examples/make_fashion_mnist.py on the Debian package's real idx files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "make_fashion_mnist.py"
SOURCE = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(
    not (SOURCE / "train-images-idx3-ubyte.gz").exists(),
    reason="apt-get install dataset-fashion-mnist",
)
def test_converter_writes_pngs_and_a_manifest_with_seeded_noise(tmp_path: Path) -> None:
    out = tmp_path / "fm"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "-o",
        str(out),
        "--train",
        "200",
        "--test",
        "50",
        "--noise",
        "symmetric:0.2",
        "--seed",
        "1",
        "--workers",
        "0",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    m = pd.read_csv(out / "manifest.csv", dtype=str)
    assert list(m.columns) == ["id", "path", "label", "split", "true_label"]
    assert (m["split"] == "train").sum() == 200 and (m["split"] == "test").sum() == 50
    train = m[m["split"] == "train"]
    assert (train["label"] != train["true_label"]).sum() == 40
    test = m[m["split"] == "test"]
    assert (test["label"] == test["true_label"]).all()
    assert m["true_label"].nunique() == 10
    with Image.open(out / m["path"].iloc[0]) as img:
        assert img.size == (28, 28)
    first = (out / "manifest.csv").read_bytes()
    subprocess.run([*cmd[:3], str(tmp_path / "again"), *cmd[4:]], check=True, capture_output=True)
    assert (tmp_path / "again" / "manifest.csv").read_bytes() == first

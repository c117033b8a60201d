"""Bring your own embeddings: ``score --features``, then ``train``, ``embed`` and ``review``
on a run that has no backbone, and every bad features file as one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from noisyclean.cli import app
from noisyclean.feature_file import write_feature_file

runner = CliRunner()
K, N, D = 4, 240, 16


def _data(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, K, N)
    centres = rng.normal(size=(K, D)) * 3
    x = (centres[true] + rng.normal(size=(N, D))).astype(np.float32)
    given = true.copy()
    flip = rng.choice(N, 24, replace=False)
    given[flip] = (true[flip] + 1) % K
    names = np.array(["ant", "bee", "cat", "dog"])
    frame = pd.DataFrame(
        {
            "id": [f"s{i:03d}" for i in range(N)],
            "path": [f"img/s{i:03d}.jpg" for i in range(N)],  # no image exists
            "label": names[given],
            "true_label": names[true],
        }
    )
    return frame, x


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    frame, x = _data()
    manifest = tmp_path / "manifest.csv"
    frame.to_csv(manifest, index=False)
    # The file lacks row 0, and lists its rows in another order than the manifest.
    order = np.random.default_rng(1).permutation(np.arange(1, N))
    feats = tmp_path / "features.parquet"
    write_feature_file(feats, frame["id"].to_numpy()[order], x[order].astype(np.float16))
    return manifest, feats, frame


def _invoke(args: list[str]) -> tuple[int, str]:
    result = runner.invoke(app, args)
    return result.exit_code, result.output


def _score(manifest: Path, feats: Path, out: Path, *extra: str) -> list[str]:
    return [
        "score",
        str(manifest),
        "--features",
        str(feats),
        "-o",
        str(out),
        "--folds",
        "3",
        *extra,
    ]


def test_score_train_embed_review_from_a_features_file(
    files: tuple[Path, Path, pd.DataFrame], tmp_path: Path
) -> None:
    manifest, feats, frame = files
    conf = tmp_path / "conf.parquet"
    code, out = _invoke(_score(manifest, feats, conf))
    assert code == 0, out
    df = pd.read_parquet(conf)
    assert df["id"].tolist() == frame["id"].tolist()
    assert df["status"].tolist() == ["missing"] + ["ok"] * (N - 1)
    meta = pq.read_schema(conf).metadata
    assert meta[b"backbone"] == b"features" and Path(meta[b"features_file"].decode()) == feats
    assert meta[b"top_classes"] == b"4"
    auroc = float(out.split("(usable train rows): ")[1].split()[0])
    assert auroc > 0.9

    run = tmp_path / "run"
    code, out = _invoke(["train", "-w", str(conf), "-o", str(run), "--epochs", "3"])
    assert code == 0, out
    config = json.loads((run / "config.json").read_text())
    assert config["features_file"] == str(feats) and config["feature_dim"] == D

    # A run without a backbone embeds new rows only from their features.
    code, out = _invoke(["embed", str(run), str(manifest), "-o", str(tmp_path / "e.parquet")])
    assert code == 1 and "has no backbone" in out and len(out.strip().splitlines()) == 1
    code, out = _invoke(
        ["embed", str(run), str(manifest), "--features", str(feats), "-o", str(tmp_path / "e.pq")]
    )
    assert code == 0, out
    emb = pd.read_parquet(tmp_path / "e.pq")
    assert emb["status"].tolist() == df["status"].tolist()
    assert len(emb["embedding"].iloc[1]) == config["train"]["embedding_dim"]

    # The review page shows placeholders for the images that don't exist.
    code, out = _invoke(["review", str(run), "-o", str(tmp_path / "page.html"), "--top", "5"])
    assert code == 0, out
    assert "without an image; 0 thumbnails" in out


def test_the_file_s_status_and_null_embeddings(tmp_path: Path) -> None:
    frame, x = _data()
    frame.to_csv(tmp_path / "m.csv", index=False)
    status = ["ok"] * N
    status[3] = "unreadable"
    emb: list[list[float] | None] = [list(map(float, row)) for row in x]
    emb[5] = None
    table = pa.table(
        {
            "id": frame["id"],
            "embedding": pa.array(emb, type=pa.list_(pa.float32())),
            "status": status,
        }
    )
    pq.write_table(table, tmp_path / "f.parquet")
    code, out = _invoke(_score(tmp_path / "m.csv", tmp_path / "f.parquet", tmp_path / "c.pq"))
    assert code == 0, out
    got = pd.read_parquet(tmp_path / "c.pq")["status"]
    assert got[3] == "unreadable" and got[5] == "missing" and (got.drop([3, 5]) == "ok").all()


def _bad_files(tmp_path: Path, frame: pd.DataFrame, x: np.ndarray) -> dict[str, tuple[Path, str]]:
    cases: dict[str, tuple[Path, str]] = {}

    def write(name: str, table: pa.Table, message: str) -> None:
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path)
        cases[name] = (path, message)

    ids = pa.array(frame["id"])
    rows = [list(map(float, r)) for r in x]
    short = [*rows[:7], rows[7][:-1], *rows[8:]]
    write(
        "wrong width",
        pa.table({"id": ids, "embedding": pa.array(short, pa.list_(pa.float32()))}),
        "row 8: an embedding of 15 values, expected 16",
    )
    nan = [list(r) for r in rows]
    nan[9][2] = float("nan")
    write(
        "NaN",
        pa.table({"id": ids, "embedding": pa.array(nan, pa.list_(pa.float32()))}),
        "row 10: NaN or infinity",
    )
    write(
        "integers",
        pa.table({"id": ids, "embedding": pa.array([[1, 2]] * N, pa.list_(pa.int64()))}),
        "expected a list of float16 or float32",
    )
    write("no embedding", pa.table({"id": ids}), "no 'embedding' column")
    dup = frame["id"].tolist()
    dup[4] = dup[2]
    write(
        "duplicate id",
        pa.table({"id": dup, "embedding": pa.array(rows, pa.list_(pa.float32()))}),
        "row 5: duplicate id 's002'",
    )
    write(
        "bad status",
        pa.table(
            {
                "id": ids,
                "embedding": pa.array(rows, pa.list_(pa.float32())),
                "status": ["ok", "broken"] + ["ok"] * (N - 2),
            }
        ),
        "row 2: status 'broken'",
    )
    text = tmp_path / "text.parquet"
    text.write_text("id,embedding\n")
    cases["not parquet"] = (text, "not a Parquet file")
    return cases


def test_bad_features_files_are_one_line(tmp_path: Path) -> None:
    frame, x = _data()
    frame.to_csv(tmp_path / "m.csv", index=False)
    for name, (path, message) in _bad_files(tmp_path, frame, x).items():
        code, out = _invoke(_score(tmp_path / "m.csv", path, tmp_path / "c.parquet"))
        lines = [line for line in out.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1 and message in lines[0], (name, out)
    assert not (tmp_path / "c.parquet").exists()


def test_train_refuses_a_features_file_that_changed(
    files: tuple[Path, Path, pd.DataFrame], tmp_path: Path
) -> None:
    manifest, feats, _ = files
    conf = tmp_path / "conf.parquet"
    assert _invoke(_score(manifest, feats, conf))[0] == 0
    st = feats.stat()
    os.utime(feats, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    code, out = _invoke(["train", "-w", str(conf), "-o", str(tmp_path / "run")])
    assert code == 1 and "changed since `noisyclean score` read it" in out


def test_top_classes_at_or_above_k_give_the_same_files(
    files: tuple[Path, Path, pd.DataFrame], tmp_path: Path
) -> None:
    """With K ≤ --top-classes every class is kept: the files, and Phase 2, are the dense
    result whatever the setting; with fewer, each row keeps its best classes."""
    manifest, feats, _ = files
    outs = {}
    for top in ("4", "9", "2"):
        conf = tmp_path / f"conf-{top}.parquet"
        assert _invoke(_score(manifest, feats, conf, "--top-classes", top))[0] == 0
        run = tmp_path / f"run-{top}"
        code, out = _invoke(["train", "-w", str(conf), "-o", str(run), "--epochs", "2"])
        assert code == 0, out
        outs[top] = (pd.read_parquet(conf), pd.read_parquet(run / "suspects.parquet"))
    (c4, s4), (c9, s9), (c2, _) = outs["4"], outs["9"], outs["2"]
    pd.testing.assert_frame_equal(c4, c9)
    pd.testing.assert_frame_equal(s4, s9)
    ok = c4["status"] == "ok"
    assert (c2.loc[ok, "top_labels"].map(len) == 2).all()
    first_two = c4.loc[ok, "top_confidences"].map(lambda v: list(v[:2]))
    assert first_two.tolist() == c2.loc[ok, "top_confidences"].map(list).tolist()
    np.testing.assert_array_equal(c2["confidence"], c4["confidence"])


def test_embeddings_stream_in_batches(
    files: tuple[Path, Path, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read in batches, the features equal a whole read, and errors name the file's row."""
    from noisyclean import feature_file
    from noisyclean.manifest import load_manifest

    manifest, feats, _ = files
    m = load_manifest(manifest, check_files=False)
    whole = feature_file.FeatureFile.open(feats).load(m)
    monkeypatch.setattr(feature_file, "BATCH_ROWS", 7)
    small = feature_file.FeatureFile.open(feats).load(m)
    np.testing.assert_array_equal(whole.values, small.values)
    assert (whole.status == small.status).all()
    rows: list[list[float] | None] = [[1.0, 2.0]] * 30
    rows = [None] * 9 + rows
    rows[20] = [1.0, 2.0, 3.0]
    pq.write_table(
        pa.table(
            {
                "id": [f"s{i:03d}" for i in range(39)],
                "embedding": pa.array(rows, pa.list_(pa.float32())),
            }
        ),
        tmp_path / "late.parquet",
    )
    with pytest.raises(feature_file.FeatureFileError, match="row 21: an embedding of 3 values"):
        feature_file.FeatureFile.open(tmp_path / "late.parquet").load(m)

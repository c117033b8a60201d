"""Shared fixtures: small sets of real Fashion-MNIST images and a session-wide feature cache."""

import os

# Before anything imports huggingface_hub: a hub lookup must fail at once, never wait on a network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# OpenMP threads that spin while they wait slow torch ~30x when another process shares the
# 2 cores; passive waiting keeps the suite's time independent of the machine's other load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from noisyclean.features import FeatureConfig, Features, extract_features
from noisyclean.manifest import Manifest, load_manifest

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "fashion-mnist-mini"
EXAMPLE_MANIFEST = EXAMPLE_DIR / "manifest.csv"
BACKBONE = "efficientnet-lite0"
#: Unit tests run the backbone at a small input size: features stay real, just cheaper.
#: (At 32 px efficientnet-lite0 features barely separate Fashion-MNIST classes: ~20% 5-NN
#: accuracy against ~72% at 64 px.)
SMALL_SIZE = 64
#: The whole committed example, for tests that judge the confidence module's quality.
EXAMPLE_SIZE = 64
PER_CLASS = 8


def feature_config(cache_dir: Path, *, image_size: int = SMALL_SIZE, **kw: object) -> FeatureConfig:
    """The offline backbone on CPU, in-process (worker processes only where a test asks)."""
    opts: dict = {"device": "cpu", "workers": 0, "batch_size": 32, **kw}
    return FeatureConfig(backbone=BACKBONE, image_size=image_size, cache_dir=cache_dir, **opts)


def model_args(cache: Path) -> list[str]:
    """The feature options of ``score`` (and ``run``): the offline backbone at the small
    size, on CPU, in-process."""
    return [
        "--backbone",
        BACKBONE,
        "--image-size",
        str(SMALL_SIZE),
        "--cache-dir",
        str(cache),
        "--device",
        "cpu",
        "--workers",
        "0",
    ]


def score_args(manifest: Path, output: Path, cache: Path, *extra: str) -> list[str]:
    """``noisyclean score`` arguments for the offline backbone at the small size, on CPU."""
    return ["score", str(manifest), "-o", str(output), *model_args(cache), *extra]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def rewrite_suspects(frame: pd.DataFrame, like: Path, dest: Path) -> None:
    """Write an edited suspects table with the metadata (format_version, run_id) of ``like``,
    as a test that changes a run's rows needs: pandas alone would drop it."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.replace_schema_metadata(pq.read_schema(like).metadata), dest)


@dataclass(frozen=True)
class SmallSet:
    """Real images copied from the committed example into a tmp folder.

    Attributes:
        root: the folder holding ``manifest.csv`` and ``images/``.
        manifest: ``root / "manifest.csv"`` with id, path (relative), label, split, true_label.
        rows: the manifest's rows, as written.
    """

    root: Path
    manifest: Path
    rows: list[dict[str, str]]


@pytest.fixture(scope="session")
def example_rows() -> list[dict[str, str]]:
    with EXAMPLE_MANIFEST.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session, so the backbone sees each image once per size."""
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="session")
def small_set(
    tmp_path_factory: pytest.TempPathFactory, example_rows: list[dict[str, str]]
) -> SmallSet:
    """PER_CLASS train rows of each true class (some with flipped labels) plus 2 test rows
    per class: 100 real images over all 10 classes."""
    root = tmp_path_factory.mktemp("small-set")
    (root / "images").mkdir()
    taken: dict[tuple[str, str], int] = {}
    rows = []
    for r in example_rows:
        want = PER_CLASS if r["split"] == "train" else 2
        key = (r["split"], r["true_label"])
        if taken.get(key, 0) >= want:
            continue
        taken[key] = taken.get(key, 0) + 1
        name = f"{r['split']}-{Path(r['path']).name}"
        shutil.copyfile(EXAMPLE_DIR / r["path"], root / "images" / name)
        rows.append({**r, "path": f"images/{name}"})
    assert len(rows) == 10 * (PER_CLASS + 2)
    return SmallSet(root=root, manifest=write_csv(root / "manifest.csv", rows), rows=rows)


@pytest.fixture(scope="session")
def small_features(small_set: SmallSet, feature_cache: Path) -> tuple[Manifest, Features]:
    manifest = load_manifest(small_set.manifest)
    return manifest, extract_features(manifest, feature_config(feature_cache))


@pytest.fixture(scope="session")
def example_features(feature_cache: Path) -> tuple[Manifest, Features]:
    """Real efficientnet-lite0 features of the whole committed example (1,500 rows)."""
    manifest = load_manifest(EXAMPLE_MANIFEST)
    feats = extract_features(manifest, feature_config(feature_cache, image_size=EXAMPLE_SIZE))
    assert (feats.status == "ok").all()
    return manifest, feats


@pytest.fixture(scope="session")
def trained_run(
    small_set: SmallSet, feature_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SmallSet, Path, Path]:
    """``score`` then ``train`` through the CLI on the small set plus one missing image.

    Returns (the small set, conf.parquet, the run directory); train's terminal output
    is saved as ``small_set.root / "train-output.txt"``.
    """
    from typer.testing import CliRunner

    from noisyclean.cli import app

    work = tmp_path_factory.mktemp("trained-run")
    rows = [*small_set.rows, {**small_set.rows[0], "id": "gone", "path": "images/gone.png"}]
    manifest = write_csv(small_set.root / "manifest-with-missing.csv", rows)
    conf, run = work / "conf.parquet", work / "run"
    runner = CliRunner()
    score = runner.invoke(
        app,
        [
            "score",
            str(manifest),
            "-o",
            str(conf),
            "--backbone",
            BACKBONE,
            "--image-size",
            str(SMALL_SIZE),
            "--cache-dir",
            str(feature_cache),
            "--device",
            "cpu",
            "--workers",
            "0",
            "--folds",
            "3",
        ],
    )
    assert score.exit_code == 0, score.output
    train = runner.invoke(
        app,
        [
            "train",
            "-w",
            str(conf),
            "-o",
            str(run),
            "--epochs",
            "3",
            "--embedding-dim",
            "16",
            "--device",
            "cpu",
            "--top",
            "5",
            "--k",
            "5",
        ],
    )
    assert train.exit_code == 0, train.output
    (small_set.root / "train-output.txt").write_text(train.output)
    return small_set, conf, run

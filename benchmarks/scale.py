"""Scale benchmark: time, peak memory and detection quality from 10k to 1M rows.

For each point ROWS×CLASSES it generates clustered synthetic 512-d features with 20%
symmetric label noise, runs the real command line on them as subprocesses,

    noisyclean score MANIFEST --features FEATURES -o conf.parquet
    noisyclean train --weights conf.parquet -o run
    noisyclean review run -o page.html --top 500

and measures each stage's wall seconds and peak RSS (the resource usage ``wait4``
reports for the stage's process, started from a small wrapper process). cleanlab on
5-fold out-of-fold LogisticRegression probabilities, as ``noisyclean bench`` runs it,
is measured the same way on the same features. Every subprocess gets
``OMP_WAIT_POLICY=PASSIVE``; a point's three stages share a timeout (``--timeout``).

The data. K class centres on the unit sphere, in groups of ``SIBLINGS`` look-alike
classes (sibling centres have cosine 0.5). A row is its class centre plus Gaussian noise
of norm ``--spread`` that lies mostly in an ``INTRINSIC``-dimensional subspace of its
own class (with a tenth of it isotropic), scaled to unit length: real embeddings of a
class vary along few directions, and those differ between classes. (Isotropic noise
in 512 dimensions makes every neighbour nearly equidistant; one subspace shared by all
classes makes neighbours depend mostly on noise that ignores the class. Neither looks
like real embeddings, and both defeat any approximate index.) A share
``--overlap`` of the rows sits
around another (random) class's centre instead: atypical or ambiguous images. Those
are what keeps detection below 1: to every detector they look just like mislabelled
rows, so Phase 1's AUROC is about 1 - overlap/2 whatever the number of rows or classes
(the default 0.2 gave 0.921 at 10,000×10 and 0.900 at 10,000×1000).
Class sizes are Zipf-like, the largest ``--imbalance`` times the smallest. 10% of the
rows are test rows, always clean; 20% of the train rows get a uniformly random other
label.

The work folder (``--work``) holds one folder per ROWS×CLASSES with the generated data
(``manifest.parquet``, ``features.parquet``, reused when present) and one folder per
search mode with the outputs, the stage logs and ``result.json``, written when the point
finishes; a rerun skips finished points. ``:exact`` after a point (or ``--exact``) runs it
with exact k-NN search (``NOISYCLEAN_EXACT_MAX_ROWS``) on the same data::

    work/300000x1000/{manifest,features}.parquet, data.json
    work/300000x1000/auto/{conf.parquet, run/, page.html, *.log, result.json}
    work/300000x1000/exact/...

Usage::

    .venv/bin/python benchmarks/scale.py --points 10000x10 10000x1000
    .venv/bin/python benchmarks/scale.py --points 300000x1000 300000x1000:exact --cleanup
    .venv/bin/python benchmarks/scale.py report --work bench-scale -o docs/scale
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("scale")

DIM = 512
#: Classes per group of look-alike classes.
SIBLINGS = 5
#: Rows generated (and held in float32) at a time.
CHUNK = 65_536
DEFAULT_POINTS = (
    "10000x10",
    "10000x1000",
    "100000x10",
    "100000x1000",
    "300000x1000",
    "1000000x10",
    "1000000x1000",
    "200000x10000",
)
#: Stages of the command line, in order.
STAGES = ("score", "train", "review")
RESULT = "result.json"
DATA_FILES = ("manifest.parquet", "features.parquet")


# ---------------------------------------------------------------------------------------
# Points and synthetic data
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One benchmark point.

    Attributes:
        rows: manifest rows (train and test).
        classes: number of classes K.
        exact: force exact k-NN search, however many rows.
    """

    rows: int
    classes: int
    exact: bool = False

    @property
    def data_name(self) -> str:
        """The folder of the point's generated data, shared by both search modes."""
        return f"{self.rows}x{self.classes}"

    @property
    def mode(self) -> str:
        """``exact`` or ``auto`` (whatever the library picks: IVF above its limit)."""
        return "exact" if self.exact else "auto"

    @property
    def name(self) -> str:
        return self.data_name + (":exact" if self.exact else "")


def parse_point(text: str) -> Point:
    """``ROWSxCLASSES`` or ``ROWSxCLASSES:exact``, e.g. ``300000x1000:exact``."""
    match = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*(:exact)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected ROWSxCLASSES[:exact]")
    rows, classes = int(match[1]), int(match[2])
    if classes < 2 or rows < max(100, classes):
        raise argparse.ArgumentTypeError(
            f"{text!r}: need at least 2 classes and 100 rows, and a row per class"
        )
    return Point(rows, classes, bool(match[3]))


@dataclass(frozen=True)
class DataConfig:
    """How a point's data is generated.

    Attributes:
        spread: norm of each row's Gaussian noise around its centre (centres have norm 1).
        overlap: share of rows drawn around another class's centre.
        imbalance: largest class size over smallest (Zipf-like sizes).
        noise: share of train rows whose label is flipped to a random other class.
        test_fraction: share of rows in the (clean) test split.
        seed: seeds everything.
    """

    spread: float = 1.5
    overlap: float = 0.2
    imbalance: float = 10.0
    noise: float = 0.2
    test_fraction: float = 0.1
    seed: int = 0


@dataclass
class Synthetic:
    """A generated data set.

    Attributes:
        features: (N, DIM) float16 unit-length rows.
        true: (N,) int64 true class of each row.
        noisy: (N,) int64 given label (the true one on test rows).
        train: (N,) bool, the row is in the train split.
        outlier: (N,) bool, the row was drawn around another class's centre.
    """

    features: np.ndarray
    true: np.ndarray
    noisy: np.ndarray
    train: np.ndarray
    outlier: np.ndarray

    @property
    def ids(self) -> np.ndarray:
        width = len(str(max(len(self.true) - 1, 0)))
        return np.char.zfill(np.arange(len(self.true)).astype(str), width)


def class_sizes(rows: int, classes: int, imbalance: float) -> np.ndarray:
    """Zipf-like class sizes summing to ``rows``, the largest ``imbalance`` × the smallest.

    Size of class c (0-based) ∝ (c + 1)^-a with a = ln(imbalance) / ln(K); every class
    gets at least one row where there are enough rows.
    """
    a = math.log(max(imbalance, 1.0)) / math.log(classes)
    weights = np.arange(1, classes + 1, dtype=np.float64) ** -a
    exact = rows * weights / weights.sum()
    sizes = np.floor(exact).astype(np.int64)
    # Largest remainders first, until the sizes add up.
    sizes[np.argsort(sizes - exact, kind="stable")[: rows - int(sizes.sum())]] += 1
    if rows >= classes:
        while (sizes == 0).any():
            sizes[np.argmax(sizes)] -= 1
            sizes[np.flatnonzero(sizes == 0)[0]] += 1
    return sizes


def class_centres(classes: int, rng: np.random.Generator) -> np.ndarray:
    """(K, DIM) float32 unit centres; classes c and c' with c ≡ c' (mod K // SIBLINGS)
    share a group centre, so their centres have cosine about 0.5."""
    groups = max(1, classes // SIBLINGS)
    group = _unit(rng.standard_normal((groups, DIM)))
    own = _unit(rng.standard_normal((classes, DIM)))
    return _unit(group[np.arange(classes) % groups] + own).astype(np.float32)


#: Dimensions the within-class variation mostly lies in (see the module docstring).
INTRINSIC = 16
#: Version of the generator, recorded with the data: data of another version is not reused
#: (2: one subspace shared by all classes; 3: a subspace per class).
GENERATOR = 3


def class_basis(c: int, seed: int) -> np.ndarray:
    """(DIM, INTRINSIC) float32 orthonormal directions along which class ``c`` varies."""
    rng = np.random.default_rng([seed, 7, c])
    return np.linalg.qr(rng.standard_normal((DIM, INTRINSIC)))[0].astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _other_class(true: np.ndarray, classes: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random class other than ``true``, for each row."""
    return (true + rng.integers(1, classes, size=len(true))) % classes


def generate(rows: int, classes: int, config: DataConfig) -> Synthetic:
    """Clustered features and noisy labels, in chunks of ``CHUNK`` rows (float16 out).

    Deterministic in (rows, classes, config); at most one chunk is held in float32.
    """
    rng = np.random.default_rng([config.seed, rows, classes])
    centres = class_centres(classes, rng)
    true = rng.permutation(
        np.repeat(np.arange(classes), class_sizes(rows, classes, config.imbalance))
    )
    outlier = rng.random(rows) < config.overlap
    around = true.copy()
    around[outlier] = _other_class(true[outlier], classes, rng)

    train = np.ones(rows, dtype=bool)
    train[rng.permutation(rows)[: round(config.test_fraction * rows)]] = False
    noisy = true.copy()
    train_rows = np.flatnonzero(train)
    flip = rng.choice(train_rows, size=round(config.noise * len(train_rows)), replace=False)
    noisy[flip] = _other_class(true[flip], classes, rng)

    features = np.empty((rows, DIM), dtype=np.float16)
    low = np.float32(config.spread / math.sqrt(INTRINSIC))
    iso = np.float32(0.1 * config.spread / math.sqrt(DIM))
    for i, start in enumerate(range(0, rows, CHUNK)):
        part = slice(start, min(start + CHUNK, rows))
        chunk_rng = np.random.default_rng([config.seed, rows, classes, i])
        n = part.stop - start
        z = chunk_rng.standard_normal((n, INTRINSIC), dtype=np.float32) * low
        x = iso * chunk_rng.standard_normal((n, DIM), dtype=np.float32)
        x += centres[around[part]]
        # Each row varies along the subspace of the class it is drawn around.
        order = np.argsort(around[part], kind="stable")
        cls, first = np.unique(around[part][order], return_index=True)
        for c, rows_c in zip(cls, np.split(order, first[1:]), strict=True):
            x[rows_c] += z[rows_c] @ class_basis(int(c), config.seed).T
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        features[part] = x
    return Synthetic(features=features, true=true, noisy=noisy, train=train, outlier=outlier)


def class_names(classes: int) -> np.ndarray:
    """``c000`` … : zero-padded, so they sort in class order."""
    width = len(str(classes - 1))
    return np.array([f"c{c:0{width}d}" for c in range(classes)])


def write_data(folder: Path, data: Synthetic) -> None:
    """``manifest.parquet`` (id, path, label, true_label, split) and ``features.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from noisyclean.artifacts import atomic_path
    from noisyclean.feature_file import write_feature_file

    names = class_names(int(data.true.max()) + 1 if len(data.true) else 1)
    ids = data.ids
    manifest = pa.table(
        {
            "id": ids,
            "path": np.char.add(np.char.add("img/", ids), ".jpg"),
            "label": names[data.noisy],
            "true_label": names[data.true],
            "split": np.where(data.train, "train", "test"),
        }
    )
    with atomic_path(folder / "manifest.parquet") as tmp:
        pq.write_table(manifest, tmp)
    write_feature_file(folder / "features.parquet", ids, data.features)


def generate_files(folder: Path, rows: int, classes: int, config: DataConfig) -> None:
    """Generate a point's data into ``folder``: the two Parquet files, then ``data.json``
    (its settings and a few facts), which marks the data complete."""
    started = time.perf_counter()
    data = generate(rows, classes, config)
    write_data(folder, data)
    sizes = np.bincount(data.true, minlength=classes)
    facts = {
        "train_rows": int(data.train.sum()),
        "mislabelled": int((data.noisy != data.true).sum()),
        "outliers": int(data.outlier.sum()),
        "smallest_class": int(sizes.min()),
        "largest_class": int(sizes.max()),
        "features_bytes": (folder / "features.parquet").stat().st_size,
    }
    _write_json(
        folder / "data.json",
        {
            "config": data_settings(rows, classes, config),
            "facts": facts,
            "seconds": time.perf_counter() - started,
        },
    )


def data_settings(rows: int, classes: int, config: DataConfig) -> dict[str, Any]:
    """What ``data.json`` records as the settings of a point's data."""
    return {
        "rows": rows,
        "classes": classes,
        "dim": DIM,
        "generator": GENERATOR,
        **asdict(config),
    }


# ---------------------------------------------------------------------------------------
# Measured subprocesses
# ---------------------------------------------------------------------------------------


@dataclass
class Stage:
    """One measured subprocess.

    Attributes:
        status: ``ok``, ``failed`` (non-zero exit), ``timeout`` or ``skipped``.
        seconds: wall seconds.
        peak_rss_mb: the process's peak resident memory (its largest waited-for child
            included), in MB (10^6 bytes).
        returncode: the exit status (negative: killed by that signal).
        note: why it was skipped, or the last line of a failure's output.
    """

    status: str
    seconds: float | None = None
    peak_rss_mb: float | None = None
    returncode: int | None = None
    note: str = ""


#: Runs the measured command from a fresh, small process: on Linux a child's peak RSS
#: starts at its parent's (the memory it was forked from), so measuring from this
#: script, which may hold a data set, would inflate every figure. Writes
#: "returncode seconds peak_kib" to argv[1].
_WRAPPER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {seconds} {usage.ru_maxrss}")
"""


def run_measured(
    command: Sequence[str], *, log_file: Path, env: dict[str, str], timeout: float
) -> Stage:
    """Run ``command`` (output to ``log_file``) and measure its wall time and peak RSS.

    The command runs under a small wrapper process, in its own process group; past
    ``timeout`` seconds the group is terminated (then killed) and the stage recorded as
    a timeout, with the peak RSS the command had reached.
    """
    stats = log_file.with_suffix(".rusage")
    stats.unlink(missing_ok=True)
    wrapper = [sys.executable, "-S", "-c", _WRAPPER, str(stats), *command]
    with log_file.open("w") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(
            wrapper, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            peak = _peak_of_children(proc.pid)
            _kill_group(proc)
            seconds = time.perf_counter() - started
            return Stage("timeout", seconds, peak, proc.returncode, f"killed after {timeout:.0f} s")
        except BaseException:  # Ctrl-C or SIGTERM: the stage must not outlive the benchmark
            _kill_group(proc)
            raise
    seconds = time.perf_counter() - started
    if not stats.is_file():
        return Stage("failed", seconds, None, proc.returncode, "the measuring wrapper failed")
    code, wall, kib = stats.read_text().split()
    returncode, peak = int(code), int(kib) * 1024 / 1e6
    if returncode != 0:
        return Stage("failed", float(wall), peak, returncode, _last_line(log_file))
    return Stage("ok", float(wall), peak, 0)


def _peak_of_children(pid: int) -> float | None:
    """The largest peak RSS (VmHWM, MB) among ``pid``'s children, read from /proc."""
    peaks = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for child in children:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) * 1024 / 1e6)
    except (OSError, ValueError):
        pass
    return max(peaks, default=None)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group ``proc`` leads, SIGKILL it 10 s later if still there."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else ""


def noisyclean_command() -> list[str]:
    """The ``noisyclean`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("noisyclean")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "noisyclean"]


def stage_env(point: Point) -> dict[str, str]:
    """The environment of every measured subprocess."""
    env = dict(os.environ)
    env.update(OMP_WAIT_POLICY="PASSIVE", COLUMNS="200", NO_COLOR="1", HF_HUB_OFFLINE="1")
    env.pop("FORCE_COLOR", None)
    if point.exact:
        env["NOISYCLEAN_EXACT_MAX_ROWS"] = str(point.rows)
    else:
        env.pop("NOISYCLEAN_EXACT_MAX_ROWS", None)
    return env


_FLOAT = r"([0-9]*\.?[0-9]+|nan)"
_SCORE_AUROC = re.compile(
    r"AUROC\s+of\s+1\s+-\s+confidence\s+against\s+true_label\s+\(usable\s+train\s+rows\):\s*"
    + _FLOAT
)
_TRAIN_AUROC = re.compile(
    r"AUROC\s+against\s+true_label\s+\(usable\s+train\s+rows\):\s*Phase\s+1\s+confidence\s*"
    + _FLOAT
    + r",\s*Phase\s+2\s+suspicion\s*"
    + _FLOAT
)


def _number(text: str) -> float:
    return float("nan") if text == "nan" else float(text)


def printed_aurocs(score_log: Path, train_log: Path) -> dict[str, float | None]:
    """The AUROCs ``score`` and ``train`` print (None where a stage printed none)."""
    found: dict[str, float | None] = {"score": None, "phase1": None, "phase2": None}
    if score_log.is_file() and (m := _SCORE_AUROC.search(score_log.read_text(errors="replace"))):
        found["score"] = _number(m[1])
    if train_log.is_file() and (m := _TRAIN_AUROC.search(train_log.read_text(errors="replace"))):
        found["phase1"], found["phase2"] = _number(m[1]), _number(m[2])
    return found


# ---------------------------------------------------------------------------------------
# cleanlab, the peer
# ---------------------------------------------------------------------------------------


def cleanlab_job(manifest: Path, features: Path, output: Path, seed: int) -> None:
    """cleanlab on the train rows, as ``noisyclean bench`` runs it; writes ``output`` JSON.

    5-fold out-of-fold probabilities of scikit-learn's default LogisticRegression, then
    ``find_label_issues`` and ``get_label_quality_scores``.
    """
    import warnings

    import pyarrow.parquet as pq
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from noisyclean.metrics import auroc

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    started = time.perf_counter()
    frame = pq.read_table(manifest, columns=["id", "label", "true_label", "split"]).to_pandas()
    train = (frame["split"] == "train").to_numpy()
    table = pq.read_table(features, columns=["id", "embedding"])
    if table.column("id").to_pylist() != frame["id"].tolist():
        raise SystemExit(f"{features}: ids not in the manifest's order")
    x = _train_features(table.column("embedding"), train)
    del table
    labels = frame["label"].astype(str).to_numpy()
    classes, y = np.unique(labels[train], return_inverse=True)
    wrong = (frame["label"] != frame["true_label"]).to_numpy()[train]
    loaded = time.perf_counter()
    probs = cross_val_predict(
        LogisticRegression(),
        x,
        y,
        cv=StratifiedKFold(5, shuffle=True, random_state=seed),
        method="predict_proba",
    )
    quality = get_label_quality_scores(y, probs)
    flagged = find_label_issues(y, probs)
    hits = int((flagged & wrong).sum())
    _write_json(
        output,
        {
            "auroc": auroc(1.0 - quality, wrong),
            "flagged": int(flagged.sum()),
            "flag_precision": hits / max(int(flagged.sum()), 1),
            "flag_recall": hits / max(int(wrong.sum()), 1),
            "classes": len(classes),
            "load_seconds": loaded - started,
            "fit_seconds": time.perf_counter() - loaded,
        },
    )


def _train_features(column: Any, train: np.ndarray) -> np.ndarray:
    """The train rows of a features file's ``embedding`` column as float32, in chunks."""
    chunks = []
    offset = 0
    for chunk in column.chunks:
        n = len(chunk)
        values = chunk.flatten().to_numpy(zero_copy_only=False).reshape(n, -1)
        chunks.append(values[train[offset : offset + n]].astype(np.float32))
        offset += n
    return np.concatenate(chunks)


# ---------------------------------------------------------------------------------------
# A point, end to end
# ---------------------------------------------------------------------------------------


@dataclass
class RunOptions:
    """Options of ``run`` that shape every point.

    Attributes:
        work: the work folder.
        data: how data is generated.
        top_classes: ``score --top-classes`` (None: the CLI's default).
        timeout: seconds for the three stages of a point together.
        cleanlab: run the peer.
        cleanlab_timeout: seconds for cleanlab at one point.
        cleanlab_max_cells: skip cleanlab where rows × classes is larger.
        review_top: ``review --top``.
        cleanup: delete a point's generated data and big outputs once it is finished.
    """

    work: Path
    data: DataConfig = field(default_factory=DataConfig)
    top_classes: int | None = None
    timeout: float = 3600.0
    cleanlab: bool = True
    cleanlab_timeout: float = 3600.0
    cleanlab_max_cells: float = 3e8
    review_top: int = 500
    cleanup: bool = False


def ensure_data(folder: Path, point: Point, config: DataConfig) -> dict[str, Any]:
    """Generate the point's data into ``folder`` (a measured subprocess) unless it is
    there; what it took.

    Raises:
        SystemExit: the folder holds data generated with other settings, or generating
            failed.
    """
    stamp = folder / "data.json"
    wanted = data_settings(point.rows, point.classes, config)
    if stamp.is_file():
        recorded = json.loads(stamp.read_text())
        if recorded.get("config") != wanted:
            raise SystemExit(
                f"{folder} holds data generated with {recorded.get('config')}, not {wanted}: "
                "use those settings, another --work, or delete the folder"
            )
        if all((folder / name).is_file() for name in DATA_FILES):
            log.info("%s: reusing the generated data", point.data_name)
            return {"status": "reused"}
        stamp.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    log.info("%s: generating %d rows × %d classes", point.data_name, point.rows, point.classes)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_generate",
        str(folder),
        str(point.rows),
        str(point.classes),
        json.dumps(asdict(config)),
    ]
    stage = run_measured(
        command, log_file=folder / "generate.log", env=dict(os.environ), timeout=7200
    )
    if stage.status != "ok":
        raise SystemExit(f"{point.data_name}: generating the data {stage.status}: {stage.note}")
    log.info(
        "%s: generated in %.1f s, peak %.0f MB: %s",
        point.data_name,
        stage.seconds or 0.0,
        stage.peak_rss_mb or 0.0,
        json.loads(stamp.read_text())["facts"],
    )
    return asdict(stage)


def run_point(point: Point, options: RunOptions) -> dict[str, Any]:
    """Generate (or reuse) the point's data, run and measure the stages, write result.json."""
    data_dir = options.work / point.data_name
    out_dir = data_dir / point.mode
    if out_dir.exists():
        log.info("%s: discarding the outputs of an unfinished run", point.name)
        shutil.rmtree(out_dir)
    generation = ensure_data(data_dir, point, options.data)
    out_dir.mkdir(parents=True)
    manifest, features = data_dir / "manifest.parquet", data_dir / "features.parquet"
    conf, run_dir, page = out_dir / "conf.parquet", out_dir / "run", out_dir / "page.html"
    nc = noisyclean_command()
    top = ["--top-classes", str(options.top_classes)] if options.top_classes else []
    commands = {
        "score": [*nc, "score", str(manifest), "--features", str(features), "-o", str(conf), *top],
        "train": [*nc, "train", "--weights", str(conf), "-o", str(run_dir)],
        "review": [*nc, "review", str(run_dir), "-o", str(page), "--top", str(options.review_top)],
    }
    env = stage_env(point)
    stages: dict[str, Stage] = {}
    deadline = time.perf_counter() + options.timeout
    for name in STAGES:
        earlier = [s for s in stages.values() if s.status != "ok"]
        if earlier:
            stages[name] = Stage("skipped", note=f"an earlier stage {earlier[0].status}")
            continue
        left = deadline - time.perf_counter()
        log.info("%s: %s (%.0f s left of the point's timeout)", point.name, name, left)
        stage = run_measured(
            commands[name], log_file=out_dir / f"{name}.log", env=env, timeout=max(left, 1.0)
        )
        stages[name] = stage
        log.info(
            "%s: %s %s in %.1f s, peak %.0f MB%s",
            point.name,
            name,
            stage.status,
            stage.seconds or 0.0,
            stage.peak_rss_mb or 0.0,
            f" ({stage.note})" if stage.note else "",
        )

    peer = run_cleanlab(point, options, manifest, features, out_dir, env)
    aurocs = printed_aurocs(out_dir / "score.log", out_dir / "train.log")
    result: dict[str, Any] = {
        "point": point.name,
        "rows": point.rows,
        "classes": point.classes,
        "mode": point.mode,
        "status": _overall(stages),
        "stages": {name: asdict(stage) for name, stage in stages.items()},
        "total_seconds": sum(s.seconds or 0.0 for s in stages.values()),
        "peak_rss_mb": max((s.peak_rss_mb or 0.0 for s in stages.values()), default=0.0),
        "conf_bytes": conf.stat().st_size if conf.is_file() else None,
        "page_bytes": page.stat().st_size if page.is_file() else None,
        "auroc_score": aurocs["score"],
        "auroc_phase1": aurocs["phase1"],
        "auroc_phase2": aurocs["phase2"],
        "auroc_computed": computed_aurocs(manifest, conf, run_dir),
        "neighbours": _conf_neighbours(conf),
        "train_neighbours": _run_neighbours(run_dir),
        "cleanlab": peer,
        "top_classes": options.top_classes,
        "review_top": options.review_top,
        "generation": generation,
        "data": json.loads((data_dir / "data.json").read_text()),
        "machine": _machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    _write_json(out_dir / RESULT, result)
    log.info(
        "%s: %s; %.1f min; AUROC phase 1 %s, phase 2 %s; kNN %s; cleanlab %s",
        point.name,
        result["status"],
        result["total_seconds"] / 60,
        _fmt(result["auroc_phase1"] or result["auroc_score"], 3),
        _fmt(result["auroc_phase2"], 3),
        _knn_text(result["neighbours"]),
        _cleanlab_text(peer),
    )
    return result


def _overall(stages: dict[str, Stage]) -> str:
    for stage in stages.values():
        if stage.status != "ok":
            return stage.status
    return "ok"


def run_cleanlab(
    point: Point,
    options: RunOptions,
    manifest: Path,
    features: Path,
    out_dir: Path,
    env: dict[str, str],
) -> dict[str, Any]:
    """cleanlab at this point, in its own measured subprocess (only once per data set:
    the exact-search variant reuses the other's figures when they are there)."""
    if not options.cleanlab:
        return asdict(Stage("skipped", note="--no-cleanlab"))
    if point.exact:
        other = out_dir.parent / "auto" / RESULT
        if other.is_file():
            return {**json.loads(other.read_text())["cleanlab"], "from": "auto"}
    cells = point.rows * point.classes
    if cells > options.cleanlab_max_cells:
        note = f"rows × classes {cells:.1e} > --cleanlab-max-cells {options.cleanlab_max_cells:.1e}"
        log.info("%s: cleanlab skipped: %s", point.name, note)
        return asdict(Stage("skipped", note=note))
    output = out_dir / "cleanlab.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_cleanlab",
        str(manifest),
        str(features),
        str(output),
        "--seed",
        str(options.data.seed),
    ]
    log.info("%s: cleanlab", point.name)
    stage = run_measured(
        command, log_file=out_dir / "cleanlab.log", env=env, timeout=options.cleanlab_timeout
    )
    figures = json.loads(output.read_text()) if stage.status == "ok" else {}
    log.info(
        "%s: cleanlab %s in %.1f s, peak %.0f MB%s",
        point.name,
        stage.status,
        stage.seconds or 0.0,
        stage.peak_rss_mb or 0.0,
        f" ({stage.note})" if stage.note else "",
    )
    return {**asdict(stage), **figures}


def computed_aurocs(manifest: Path, conf: Path, run_dir: Path) -> dict[str, float | None]:
    """Phase 1 and Phase 2 AUROCs recomputed from conf.parquet and suspects.parquet at
    full precision (the CLI prints three digits), over the same rows: usable train rows.
    """
    import pyarrow.parquet as pq

    from noisyclean.metrics import auroc

    found: dict[str, float | None] = {"phase1": None, "phase2": None}
    if not conf.is_file():
        return found
    truth = pq.read_table(manifest, columns=["label", "true_label", "split"]).to_pandas()
    wrong = (truth["label"] != truth["true_label"]).to_numpy()
    train = (truth["split"] == "train").to_numpy()
    c = pq.read_table(conf, columns=["status", "confidence"]).to_pandas()
    rows = train & (c["status"] == "ok").to_numpy()
    found["phase1"] = auroc(1.0 - c["confidence"].to_numpy()[rows], wrong[rows])
    suspects = run_dir / "suspects.parquet"
    if suspects.is_file():
        t = pq.read_table(suspects, columns=["status", "suspicion"]).to_pandas()
        rows = train & (t["status"] == "ok").to_numpy()
        found["phase2"] = auroc(t["suspicion"].to_numpy()[rows], wrong[rows])
    return found


def _conf_neighbours(conf: Path) -> dict[str, Any]:
    """conf.parquet's ``neighbours`` metadata: how Phase 1's k-NN search ran."""
    if not conf.is_file():
        return {}
    import pyarrow.parquet as pq

    meta = pq.read_schema(conf).metadata or {}
    raw = meta.get(b"neighbours")
    return json.loads(raw) if raw else {}


def _run_neighbours(run_dir: Path) -> dict[str, Any]:
    """The run's ``neighbours`` (config.json): how Phase 2's k-NN search ran."""
    config = run_dir / "config.json"
    if not config.is_file():
        return {}
    value = json.loads(config.read_text()).get("neighbours")
    return value if isinstance(value, dict) else {}


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        from noisyclean import __version__

        info["noisyclean"] = __version__
    except ImportError:
        pass
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
        info["commit"] = head.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def cleanup_point(data_dir: Path) -> None:
    """Delete the generated data and the big outputs, keeping logs and result.json."""
    removed = 0
    targets = [data_dir / name for name in DATA_FILES]
    for mode in ("auto", "exact"):
        out = data_dir / mode
        targets += [out / "conf.parquet", out / "page.html", out / "run"]
    for path in targets:
        if path.is_dir():
            removed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        elif path.is_file():
            removed += path.stat().st_size
            path.unlink()
    log.info("%s: cleaned up %.1f MB", data_dir.name, removed / 1e6)


def run_points(points: Sequence[Point], options: RunOptions) -> list[dict[str, Any]]:
    """Run every unfinished point in order; a finished one's result is read back."""
    results = []
    for i, point in enumerate(points):
        done = options.work / point.data_name / point.mode / RESULT
        if done.is_file():
            log.info("%s: finished before, skipped (%s)", point.name, done)
            results.append(json.loads(done.read_text()))
        else:
            results.append(run_point(point, options))
        later = [p for p in points[i + 1 :] if p.data_name == point.data_name]
        if options.cleanup and not later:
            cleanup_point(options.work / point.data_name)
    return results


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def load_results(work: Path) -> list[dict[str, Any]]:
    """Every finished point under ``work``, by rows, classes, then mode."""
    found = [json.loads(p.read_text()) for p in sorted(work.glob(f"*/*/{RESULT}"))]
    return sorted(found, key=lambda r: (r["rows"], r["classes"], r["mode"] != "auto"))


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _mb(size: int | None) -> str:
    return _fmt(size / 1e6 if size else None, 1)


def _stage_cell(stage: dict[str, Any] | None) -> str:
    if not stage or stage.get("status") == "skipped":
        return "–"
    text = f"{_fmt(stage['seconds'])} s / {_fmt(stage['peak_rss_mb'])} MB"
    return text if stage["status"] == "ok" else f"{stage['status']} ({text})"


def _knn_text(nb: dict[str, Any]) -> str:
    if not nb:
        return "–"
    if nb.get("method") == "exact":
        return "exact"
    recall = nb.get("recall")
    recall_text = f"{recall:.3f}" if isinstance(recall, (int, float)) else "?"
    return f"{nb.get('method')} nprobe {nb.get('nprobe')}/{nb.get('nlist')}, recall {recall_text}"


def _cleanlab_text(c: dict[str, Any]) -> str:
    status = c.get("status")
    if status == "skipped":
        return "skipped"
    if status == "timeout":
        return f"timed out ({_fmt(c.get('seconds'))} s)"
    if status != "ok":
        return f"{status}: {c.get('note', '')}"
    return f"{_fmt(c['seconds'])} s / {_fmt(c['peak_rss_mb'])} MB / {_fmt(c.get('auroc'), 3)}"


def results_table(results: Sequence[dict[str, Any]]) -> str:
    """The Markdown table of ``results.md``."""
    head = [
        "rows × classes",
        "search",
        "score s / peak MB",
        "train s / peak MB",
        "review s / peak MB",
        "total min",
        "conf.parquet / page MB",
        "AUROC phase 1 / 2",
        "kNN (phase 1)",
        "cleanlab s / peak MB / AUROC",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        status = "" if r["status"] == "ok" else f" **{r['status']}**"
        phase1 = r.get("auroc_phase1") or r.get("auroc_score")
        cells = [
            f"{r['rows']:,} × {r['classes']:,}{status}",
            r["mode"],
            *(_stage_cell(r["stages"].get(s)) for s in STAGES),
            _fmt(r["total_seconds"] / 60, 1),
            f"{_mb(r.get('conf_bytes'))} / {_mb(r.get('page_bytes'))}",
            f"{_fmt(phase1, 3)} / {_fmt(r.get('auroc_phase2'), 3)}",
            _knn_text(r.get("neighbours") or {}),
            _cleanlab_text(r.get("cleanlab") or {}),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def exact_comparison(results: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of the points run both ways ("" when there are none)."""
    by_key = {(r["rows"], r["classes"], r["mode"]): r for r in results}
    lines = [
        "| rows × classes | kNN (auto) | phase 1 AUROC auto / exact | "
        "phase 2 AUROC auto / exact | score s auto / exact | train s auto / exact |",
        "|---|---|---|---|---|---|",
    ]
    for (rows, classes, mode), auto in by_key.items():
        exact = by_key.get((rows, classes, "exact"))
        if mode != "auto" or exact is None:
            continue
        cells = [f"{rows:,} × {classes:,}", _knn_text(auto.get("neighbours") or {})]
        for phase in ("phase1", "phase2"):
            a, e = (r.get("auroc_computed", {}).get(phase) for r in (auto, exact))
            cells.append(f"{_fmt(a, 4)} / {_fmt(e, 4)}")
        for stage in ("score", "train"):
            a, e = (r["stages"][stage].get("seconds") for r in (auto, exact))
            cells.append(f"{_fmt(a)} / {_fmt(e)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _tick(value: float, _position: int) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def plot(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Total time and peak memory against rows, one line per class count, log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    auto = [r for r in results if r["mode"] == "auto" and r["status"] == "ok"]
    for classes in sorted({r["classes"] for r in auto}):
        mine = sorted((r for r in auto if r["classes"] == classes), key=lambda r: r["rows"])
        rows = [r["rows"] for r in mine]
        label = f"{classes:,} classes"
        ax_time.plot(rows, [r["total_seconds"] / 60 for r in mine], "o-", label=label)
        ax_mem.plot(rows, [r["peak_rss_mb"] / 1000 for r in mine], "o-", label=label)
    for ax, ylabel, title in (
        (ax_time, "score + train + review (minutes)", "Wall time"),
        (ax_mem, "largest stage peak RSS (GB)", "Peak memory"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(_tick))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("rows")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(work: Path, output: Path) -> None:
    """Write ``results.md``, ``results.json`` and ``time_memory.png`` into ``output``."""
    results = load_results(work)
    if not results:
        raise SystemExit(f"{work}: no finished points (no */*/{RESULT})")
    output.mkdir(parents=True, exist_ok=True)
    first = results[0]
    gen = first["data"]["config"]
    machine = first.get("machine", {})
    text = [
        "# Scale benchmark",
        "",
        "Made by `benchmarks/scale.py` (its docstring describes the data): "
        f"{DIM}-d synthetic features, spread {gen['spread']}, overlap {gen['overlap']}, "
        f"imbalance {gen['imbalance']}, {gen['noise']:.0%} symmetric noise on train rows, "
        f"{gen['test_fraction']:.0%} clean test rows, seed {gen['seed']}. "
        f"Machine: {machine.get('cpus', '?')} CPUs, {machine.get('memory_gib', '?')} GiB; "
        f"noisyclean {machine.get('noisyclean', '?')} at {machine.get('commit', '?')}.",
        "",
        "Each stage is a `noisyclean` subprocess (`score --features`, `train`, "
        "`review --top 500`); peak MB is its peak RSS. AUROCs are the CLI's own, over usable "
        "train rows against `true_label` (1 - Phase 1 confidence; Phase 2 suspicion). "
        "cleanlab: `find_label_issues` + `get_label_quality_scores` on 5-fold out-of-fold "
        "`LogisticRegression()` probabilities, one subprocess.",
        "",
        results_table(results),
        "",
    ]
    pairs = exact_comparison(results)
    if pairs:
        text += [
            "## Approximate against exact search, same data",
            "",
            "AUROCs recomputed from conf.parquet and suspects.parquet at full precision.",
            "",
            pairs,
            "",
        ]
    (output / "results.md").write_text("\n".join(text))
    _write_json(output / "results.json", results)
    plot(results, output / "time_memory.png")
    log.info("wrote %s/results.md, results.json and time_memory.png", output)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def _write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON atomically (a temporary file renamed over ``path``)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _setup_logging(log_file: Path | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=handlers,
        force=True,
    )


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scale.py",
        description=(
            "Run the scale benchmark: generate synthetic features per point, run "
            "noisyclean score/train/review and cleanlab as measured subprocesses."
        ),
        epilog="Then: scale.py report --work DIR -o docs/scale (see scale.py report --help).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--points",
        nargs="+",
        type=parse_point,
        default=list(DEFAULT_POINTS),
        metavar="ROWSxCLASSES[:exact]",
        help="Points to run, in order; ':exact' forces exact k-NN search on the same data.",
    )
    parser.add_argument(
        "--exact", action="store_true", help="Run every point with exact k-NN search."
    )
    parser.add_argument("--work", type=Path, default=Path("bench-scale"), help="Work folder.")
    parser.add_argument(
        "--spread", type=float, default=DataConfig.spread, help="Within-class noise norm."
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=DataConfig.overlap,
        help="Share of rows drawn around another class's centre (sets the difficulty).",
    )
    parser.add_argument(
        "--imbalance",
        type=float,
        default=DataConfig.imbalance,
        help="Largest class size over smallest.",
    )
    parser.add_argument(
        "--noise", type=float, default=DataConfig.noise, help="Symmetric label noise on train rows."
    )
    parser.add_argument("--seed", type=int, default=DataConfig.seed, help="Seed of the data.")
    parser.add_argument(
        "--top-classes",
        type=int,
        default=None,
        help="Passed to `score --top-classes` [default: the CLI's].",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="Minutes for a point's three stages together."
    )
    parser.add_argument("--no-cleanlab", action="store_true", help="Don't run the cleanlab peer.")
    parser.add_argument(
        "--cleanlab-timeout", type=float, default=60.0, help="Minutes for cleanlab at one point."
    )
    parser.add_argument(
        "--cleanlab-max-cells",
        type=float,
        default=3e8,
        help="Skip cleanlab where rows × classes is larger (its probabilities are dense).",
    )
    parser.add_argument("--review-top", type=int, default=500, help="`review --top`.")
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="Delete a point's generated data, conf.parquet, run and page once it is finished.",
    )
    return parser


def report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scale.py report",
        description="Write results.md, results.json and time_memory.png from a work folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--work", type=Path, default=Path("bench-scale"), help="Work folder.")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("docs/scale"), help="Output folder."
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["report"]:
        ns = report_parser().parse_args(args[1:])
        _setup_logging(None)
        report(ns.work, ns.output)
        return 0
    if args[:1] == ["_generate"]:
        folder, rows, classes, config = args[1:]
        generate_files(Path(folder), int(rows), int(classes), DataConfig(**json.loads(config)))
        return 0
    if args[:1] == ["_cleanlab"]:
        sub = argparse.ArgumentParser(prog="scale.py _cleanlab")
        for name in ("manifest", "features", "output"):
            sub.add_argument(name, type=Path)
        sub.add_argument("--seed", type=int, default=0)
        ns = sub.parse_args(args[1:])
        cleanlab_job(ns.manifest, ns.features, ns.output, ns.seed)
        return 0
    ns = run_parser().parse_args(args)
    given = [p if isinstance(p, Point) else parse_point(p) for p in ns.points]
    points = [Point(p.rows, p.classes, p.exact or ns.exact) for p in given]
    options = RunOptions(
        work=ns.work,
        data=DataConfig(
            spread=ns.spread,
            overlap=ns.overlap,
            imbalance=ns.imbalance,
            noise=ns.noise,
            seed=ns.seed,
        ),
        top_classes=ns.top_classes,
        timeout=ns.timeout * 60,
        cleanlab=not ns.no_cleanlab,
        cleanlab_timeout=ns.cleanlab_timeout * 60,
        cleanlab_max_cells=ns.cleanlab_max_cells,
        review_top=ns.review_top,
        cleanup=ns.cleanup,
    )
    _setup_logging(ns.work / "scale.log")
    # A SIGTERM unwinds like Ctrl-C, so the running stage's process group is ended too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log.info("points: %s; work folder %s", " ".join(p.name for p in points), ns.work)
    run_points(points, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())

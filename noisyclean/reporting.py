"""What the CLI shows in the terminal: rich tables, progress bars and error lines.

Every value that comes from the user's data (labels, ids, paths, error messages) goes
through ``clean`` before it reaches the terminal: rich markup is escaped and control
characters (a label may hold an escape sequence that recolours or clears the screen)
are shown as ``\\xNN`` instead of being sent.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from noisyclean.apply import ApplySummary
    from noisyclean.flagging import Flags
    from noisyclean.loop import Change
    from noisyclean.pipeline import ScoreResult, TrainResult
    from noisyclean.ray_features import RayFeaturesResult
    from noisyclean.review import ReviewSummary

#: Classes listed by ``run --previous``: those whose estimated noise changed most.
NOISE_ROWS_SHOWN = 20

console = Console(stderr=True)
out = Console()

#: C0 and C1 control characters, DEL, and the bidirectional overrides that reorder text.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(value: object) -> str:
    """``value`` as text that is safe to print: control characters as ``\\xNN``, markup escaped."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", str(value))
    return escape(text)


def error(message: str) -> None:
    console.print(f"[bold red]error:[/] {clean(message)}", highlight=False, soft_wrap=True)


def warning(message: str) -> None:
    console.print(f"[yellow]warning:[/] {clean(message)}", highlight=False, soft_wrap=True)


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


#: The unit of a stage's rate, where it is not rows.
_STAGE_UNITS = {"train": "step", "images": "image", "pairs": "pair"}


def staged(track: Callable[[str, str], Tracker], what: str) -> Callable[[str, int, int], None]:
    """A ``(stage, done, total)`` callback that draws one bar per stage, e.g. the
    neighbour index's "train", "add" and "search", each titled ``what stage``."""
    bars: dict[str, Tracker] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = track(f"{what} {stage}", _STAGE_UNITS.get(stage, "row"))
        bars[stage](done, total)

    return update


def _line(text: str) -> None:
    out.print(text, highlight=False, soft_wrap=True)


#: Classes listed in the noise table; past this many, the noisiest.
_LISTED_CLASSES = 20


def noise_table(classes: Sequence[str], flags: Flags, codes: np.ndarray) -> None:
    """Per class: rows, flagged, estimated noise rate, and the classes confidently seen
    instead (off-diagonal counts of the confident joint). With many classes, the
    noisiest ``_LISTED_CLASSES`` of them. ``codes`` are the flagged rows' label indices."""
    import numpy as np

    shown = np.arange(len(classes))
    title = "Estimated noise per class (confident learning)"
    if len(classes) > _LISTED_CLASSES:
        shown = np.argsort(-flags.noise_rate, kind="stable")[:_LISTED_CLASSES]
        title = f"Estimated noise: the {_LISTED_CLASSES} noisiest of {len(classes)} classes"
    rows = np.bincount(codes, minlength=len(classes))
    flagged = np.bincount(codes[flags.flagged], minlength=len(classes))
    how_many = "as many as the estimate" if flags.budget is None else f"{flags.budget}"
    noise = Table(
        title=title,
        caption=f"flagged: the least supported rows of all classes, {how_many} in all; "
        "a class's share can differ from its own estimate. Each estimate moved toward "
        f"the overall one by {flags.shrinkage:.2f} of its distance (the share of the "
        "classes' scatter that sampling explains), at most one standard deviation",
    )
    for col in (
        "class",
        "rows",
        "flagged",
        "noise rate",
        "95% interval",
        "most often seen instead",
    ):
        noise.add_column(col, justify="left" if col == "class" else "right")
    for j in shown:
        instead = ", ".join(f"{clean(classes[c])} ({n})" for c, n in flags.seen_instead(int(j)))
        noise.add_row(
            clean(classes[int(j)]),
            str(int(rows[j])),
            str(int(flagged[j])),
            f"{flags.noise_rate[j]:.1%}",
            f"{flags.noise_low[j]:.1%}–{flags.noise_high[j]:.1%}",
            instead or "-",
        )
    out.print(noise)


def estimate_lines(flags: Flags, rows: str) -> None:
    """The estimated share of wrong labels with its interval, and the flagged set: how
    many, chosen how, and its expected precision."""
    low, high = flags.noise_interval
    n = len(flags.flagged)
    out.print(
        f"estimated wrong labels: [bold]{flags.noise:.1%}[/] of {n} {rows} "
        f"(95% interval {low:.1%}–{high:.1%}, bootstrap over rows)"
    )
    flagged = int(flags.flagged.sum())
    how = (
        f"a budget of {flags.budget}"
        if flags.budget is not None
        else "as many as the estimate, the least supported of all classes"
    )
    precision = f"; expected precision [bold]{flags.expected_precision:.2f}[/]" if flagged else ""
    out.print(f"flagged {flagged} ({flagged / max(n, 1):.1%}), {how}{precision}")


#: Unreadable rows listed one by one; past this many, a count per reason.
_LISTED_UNREADABLE = 20


def unreadable_rows(frame: pd.DataFrame, reasons: dict[int, str]) -> None:
    """Every unreadable row's reason: one line each, or a count per reason when many."""
    import numpy as np

    rows = np.flatnonzero((frame["status"] == "unreadable").to_numpy())
    if not len(rows):
        return
    why = [reasons.get(int(i), "could not be decoded") for i in rows]
    if len(rows) <= _LISTED_UNREADABLE:
        table = Table(title=f"{len(rows)} unreadable image(s)")
        for col in ("id", "path", "reason"):
            table.add_column(col)
        for i, reason in zip(rows, why, strict=True):
            table.add_row(clean(frame["id"].iloc[i]), clean(frame["path"].iloc[i]), clean(reason))
        out.print(table)
        return
    for reason, n in Counter(why).most_common():
        _line(f"{n} unreadable: {clean(reason)}")
    _line("(each row's status is in the output; rows with status 'unreadable' are the ones)")


def score_summary(result: ScoreResult, output: Path, seconds: float) -> None:
    import pandas as pd

    t = result.conf.frame
    classes = result.conf.meta.classes
    n_ok = int((t["status"] == "ok").sum())
    counts = t["status"].value_counts()
    unusable = ", ".join(f"{counts[s]} {s}" for s in ("missing", "unreadable") if s in counts)
    out.print(
        f"[bold]{len(t)}[/] rows, [bold]{len(classes)}[/] classes, "
        f"{n_ok} usable ({unusable or 'none unusable'}); "
        f"{result.computed} images embedded now, the rest from the cache."
    )
    unreadable_rows(t, result.reasons)
    if result.small_classes:
        warning(
            "fewer train rows than folds in: "
            f"{', '.join(result.small_classes)}; their confidences are low by construction."
        )
    codes = pd.Categorical(t["label"], categories=classes).codes
    noise_table(classes, result.flags, codes[result.flag_rows])
    doubt = t[t["status"] == "ok"].nsmallest(10, "confidence")
    top = Table(title="The 10 rows the module doubts most")
    for col in ("id", "path", "label", "confidence", "predicted", "pred. conf."):
        top.add_column(col)
    for _, r in doubt.iterrows():
        top.add_row(
            clean(r["id"]),
            clean(r["path"]),
            clean(r["label"]),
            f"{r['confidence']:.3f}",
            clean(r["pred_label"]),
            f"{r['pred_confidence']:.3f}",
        )
    out.print(top)
    estimate_lines(result.flags, "usable train rows")
    if result.auroc is not None:
        out.print(
            "AUROC of 1 - confidence against true_label (usable train rows): "
            f"[bold]{result.auroc:.3f}[/]"
        )
    _line(f"wrote {clean(output)} in {seconds:.1f} s")


def features_summary(result: RayFeaturesResult) -> None:
    t = result.frame
    counts = t["status"].value_counts()
    unusable = ", ".join(f"{counts[s]} {s}" for s in ("missing", "unreadable") if s in counts)
    where = f"{result.actors} GPU actor(s)" if result.gpus else f"{result.actors} CPU actor(s)"
    out.print(
        f"[bold]{len(t)}[/] rows, {int(counts.get('ok', 0))} usable "
        f"({unusable or 'none unusable'}); {result.dim}-d features at {result.image_size} px "
        f"on {where}: {result.images_per_second:.1f} images/s"
    )
    unreadable_rows(t, result.reasons)
    _line(
        f"wrote {result.shards} shard(s) and their list to {clean(result.output)} "
        f"in {result.total_seconds:.1f} s; use it with: noisyclean score MANIFEST "
        f"--features {clean(result.output)}"
    )


def train_summary(result: TrainResult, top: int, seconds: float) -> None:
    import numpy as np
    import pandas as pd

    found = result.suspects
    frame = result.frame
    usable = np.flatnonzero(found.usable)
    ranked = usable[np.argsort(found.rank[usable], kind="stable")][:top]
    table = Table(title=f"Top {len(ranked)} suspects")
    for col in ("rank", "id", "label", "suggested", "suspicion", "conf.", "agree", "suspect"):
        table.add_column(col)
    ids, labels = frame["id"].to_numpy(), frame["label"].to_numpy()
    for i in ranked:
        table.add_row(
            str(found.rank[i]),
            clean(ids[i]),
            clean(labels[i]),
            clean(found.classes[found.suggested[i]]),
            f"{found.suspicion[i]:.3f}",
            f"{found.confidence[i]:.3f}",
            f"{found.agreement[i]:.2f}",
            "yes" if found.is_suspect[i] else "",
        )
    out.print(table)
    codes = pd.Categorical(frame["label"], categories=found.classes).codes
    noise_table(found.classes, found.flags, codes[found.usable])
    estimate_lines(found.flags, "usable rows")
    flagged = int(result.is_suspect.sum())
    extra = flagged - int(found.is_suspect.sum())
    out.print(
        f"[bold]{flagged}[/] of {len(usable)} usable rows flagged as suspects "
        f"({flagged / max(len(usable), 1):.1%})"
        + (f", {extra} of them only as members of a conflicting duplicate group" if extra else "")
    )
    dups, outliers = result.duplicates, result.outliers
    kinds = ", ".join(
        f"{int(getattr(dups, kind).sum())} {kind}" for kind in ("conflict", "leak", "exact")
    )
    rule = (
        f"cosine ≥ {dups.threshold:g}"
        if dups.match_threshold is None
        else f"pixel match ≥ {dups.match_threshold:g} among pairs at cosine ≥ {dups.candidates:g}"
    )
    out.print(
        f"[bold]{dups.n_groups}[/] near-duplicate groups ({len(dups.members)} rows; {kinds}) "
        f"at {rule}: duplicates.parquet"
    )
    n_out = int(outliers.is_outlier.sum())
    out.print(
        f"[bold]{n_out}[/] outliers (score > {outliers.threshold:g}; suggestion drop): "
        "suspects.parquet's is_outlier"
    )
    if result.losses:
        out.print(f"loss: first epoch {result.losses[0]:.4f}, last {result.losses[-1]:.4f}")
    if result.suspicion_auroc is not None:
        out.print(
            "AUROC against true_label (usable train rows): "
            f"Phase 1 confidence [bold]{result.confidence_auroc:.3f}[/], "
            f"Phase 2 suspicion [bold]{result.suspicion_auroc:.3f}[/]"
        )
    _line(f"wrote {clean(result.run_dir)}/ (run_id {result.run_id}) in {seconds:.1f} s")


def embed_summary(frame: pd.DataFrame, output: Path) -> None:
    bad = int((frame["status"] != "ok").sum())
    _line(f"wrote {len(frame)} rows to {clean(output)} ({bad} not usable)")


def review_summary(summary: ReviewSummary) -> None:
    missing = f", {summary.missing_images} without an image" if summary.missing_images else ""
    _line(
        f"wrote {clean(summary.output)}: [bold]{summary.cards}[/] of "
        f"{summary.suspects} suspects, {summary.groups} of {summary.duplicate_groups} "
        f"duplicate groups, {summary.outlier_cards} of {summary.outliers} outliers{missing}; "
        f"{summary.images} thumbnails, {summary.size / 1e6:.2f} MB"
    )


def apply_summary(s: ApplySummary) -> None:
    table = Table(title=f"{s.rows_in} rows in, {s.decisions} decisions")
    table.add_column("")
    table.add_column("rows", justify="right")
    table.add_row("kept", str(s.kept))
    for (before, after), n in s.relabelled.items():
        table.add_row(f"relabelled {clean(before)} → {clean(after)}", str(n))
    table.add_row("dropped", str(s.dropped))
    out.print(table)
    for message in s.warnings:
        warning(message)
    _line(
        f"wrote {clean(s.output)} ({s.rows_out} rows) and "
        f"{clean(s.dropped_path)} ({s.dropped} rows)"
    )


def bench_summary(summary: pd.DataFrame, results: dict[str, Any], output: Path) -> None:
    from noisyclean.bench.report import DETECTORS, RETRIEVERS, cell, goals

    noises = [str(n) for n in results["noises"]]
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
    for text, met in goals(summary, noises, results.get("runs")):
        out.print(("[green]" if met else "[red]") + clean(text))
    _line(f"wrote {clean(output)}/results.md, results.json and plots")


def stage_line(stage: str, *, skipped: bool, summary: Mapping[str, Any] | None = None) -> None:
    """One line per stage of ``noisyclean run``: running now, or unchanged and skipped."""
    if not skipped:
        out.rule(f"[bold]{stage}[/]")
        return
    said = ""
    if summary and "suspects" in summary:
        said = (
            f" ({summary['suspects']} suspects, {summary['outliers']} outliers, "
            f"{summary['groups']} duplicate groups)"
        )
    out.print(f"[dim]{stage}: unchanged since the last run, skipped{said}[/]")


def change_summary(change: Change, previous: Path, current: Path) -> None:
    """``run --previous``: what changed since the earlier run."""
    table = Table(title=f"Since {clean(previous)}")
    for col in ("", "before", "now", "change"):
        table.add_column(col, justify="right" if col else "left")

    def number(value: float | None, percent: bool = False) -> str:
        if value is None:
            return "–"
        return f"{value:.1%}" if percent else f"{int(value):,}"

    def delta(a: float | None, b: float | None, percent: bool = False) -> str:
        if a is None or b is None:
            return ""
        d = b - a
        return f"{d:+.1%}" if percent else f"{int(d):+,}"

    before, now = change.rows
    table.add_row("rows", number(before), number(now), delta(before, now))
    labels = {
        "usable": "usable rows",
        "suspects": "suspects left",
        "outliers": "outliers",
        "groups": "duplicate groups",
    }
    for name, label in labels.items():
        a, b = change.totals.get(name, (None, None))
        table.add_row(label, number(a), number(b), delta(a, b))
    a, b = change.totals.get("noise", (None, None))
    table.add_row("estimated noise", number(a, True), number(b, True), delta(a, b, True))
    out.print(table)
    out.print(
        f"rows matched by {change.key}: {change.removed:,} removed, {change.added:,} added, "
        f"{change.relabelled:,} relabelled"
    )
    noise = Table(title="Estimated noise per class")
    for col in ("class", "rows before", "rows now", "noise before", "noise now", "change"):
        noise.add_column(col, justify="left" if col == "class" else "right")
    shown = sorted(
        change.noise,
        key=lambda r: -abs((r[2] or 0.0) - (r[1] or 0.0)),
    )[:NOISE_ROWS_SHOWN]
    for name, r0, r1, c0, c1 in shown:
        noise.add_row(
            clean(name),
            f"{c0:,}",
            f"{c1:,}",
            number(r0, True),
            number(r1, True),
            delta(r0, r1, True),
        )
    out.print(noise)
    if len(change.noise) > len(shown):
        out.print(f"[dim]{len(shown)} of {len(change.noise)} classes shown: the largest changes[/]")

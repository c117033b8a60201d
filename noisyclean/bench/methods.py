"""The methods the benchmark compares, each a function of one prepared workspace.

A workspace folder holds the features of every row (``features.npy``), the clean
labels (``true.npy``), the train mask (``train.npy``) and, per noise setting and
seed, the noisy labels (``labels-<tag>.npy``). An open-set setting also has a view
(``view-<name>.npz``, ``noisyclean.bench.openset``): the rows it keeps, their in-set
labels (-1 for a planted row of a held-out class) and K; a job with a ``view`` sees
those rows only, and its noisy labels are over them. Each method reads what it needs,
runs, and returns its figures; ``noisyclean.bench.worker`` runs one method per
subprocess so that its time and peak memory are its own.

Every detector also reports its estimate of the noise on the train rows, against the
truth (the share of train rows whose given label differs from the true one):
``noise_est``, ``noise_true``, ``noise_err`` (estimate − truth) and ``class_err_max``
(the largest |estimated − true| share of wrong labels among the train rows given a
class); the noisyclean detectors also their ``expected_precision``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from noisyclean import knn
from noisyclean.bench.report import RECALL_KS
from noisyclean.confidence import ConfidenceConfig, TopClasses, score_confidences
from noisyclean.embedding import TrainConfig, embed, train_head
from noisyclean.flagging import Flags, confident_flags
from noisyclean.metrics import auroc, average_precision, precision_at_n, recall_at_k
from noisyclean.suspects import SuspectConfig, find_suspects

#: The method whose output (``conf-<tag>.npy``) methods with ``needs_phase1`` read.
PHASE1 = "noisyclean-confidence"


@dataclass(frozen=True)
class Job:
    """One method on one noise setting and seed.

    Attributes:
        method: a key of ``METHODS``.
        work: the workspace folder.
        tag: names the noisy labels (``labels-<tag>.npy``) and Phase 1's output
            (``conf-<tag>.npy``); empty for methods that read only clean labels.
        seed: seeds the method.
        confidence: Phase 1 options.
        train: Phase 2 options.
        suspects: suspect-finder options.
        view: the workspace's rows this job sees (``view-<view>.npz``); empty: all.
    """

    method: str
    work: str
    tag: str
    seed: int
    confidence: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    suspects: dict[str, Any] = field(default_factory=dict)
    view: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Job:
        return cls(**json.loads(text))


@dataclass
class Workspace:
    features: np.ndarray
    true: np.ndarray
    train: np.ndarray
    n_classes: int
    folder: Path

    @classmethod
    def load(cls, folder: str | Path, view: str = "") -> Workspace:
        """The workspace, or its view ``view`` (rows, in-set labels, K) if given."""
        folder = Path(folder)
        features = np.load(folder / "features.npy", mmap_mode="r")
        if view:
            with np.load(folder / f"view-{view}.npz") as v:
                return cls(
                    features=np.asarray(features[v["rows"]]),
                    true=v["true"],
                    train=v["train"],
                    n_classes=len(v["classes"]),
                    folder=folder,
                )
        meta = json.loads((folder / "workspace.json").read_text())
        return cls(
            features=features,
            true=np.load(folder / "true.npy"),
            train=np.load(folder / "train.npy"),
            n_classes=int(meta["n_classes"]),
            folder=folder,
        )

    def noisy(self, tag: str) -> np.ndarray:
        return np.load(self.folder / f"labels-{tag}.npy")


@dataclass(frozen=True)
class NoiseEstimate:
    """A detector's estimate of the noise on the train rows.

    Attributes:
        overall: estimated share of wrong labels over the train rows.
        per_class: (K,) estimated share of wrong labels among the train rows given
            each class.
        expected_precision: the detector's own expected precision of its flagged set
            (noisyclean's ``Flags.expected_precision``); None where it has none.
    """

    overall: float
    per_class: np.ndarray
    expected_precision: float | None = None


def true_class_rates(given: np.ndarray, wrong: np.ndarray, n_classes: int) -> np.ndarray:
    """(K,) the share of wrong labels among the rows given each class (NaN for a class
    no row is given)."""
    counts = np.bincount(given, minlength=n_classes).astype(np.float64)
    bad = np.bincount(given, weights=wrong.astype(np.float64), minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, bad / counts, np.nan)


def flagged_share(flagged: np.ndarray, given: np.ndarray, n_classes: int) -> NoiseEstimate:
    """The flagged share as a noise estimate, overall and per given class."""
    rates = true_class_rates(given, flagged, n_classes)
    return NoiseEstimate(float(flagged.mean()) if len(flagged) else 0.0, np.nan_to_num(rates))


def noise_figures(
    estimate: NoiseEstimate, given: np.ndarray, wrong: np.ndarray, n_classes: int
) -> dict[str, float]:
    """``noise_est``, ``noise_true``, ``noise_err`` (estimate − truth, signed),
    ``class_err_max`` (max over the classes some train row is given of |estimated −
    true| share of wrong labels) and, where the detector has one, ``expected_precision``."""
    truth = float(wrong.mean()) if len(wrong) else 0.0
    true_rates = true_class_rates(given, wrong, n_classes)
    present = ~np.isnan(true_rates)
    per_class = np.asarray(estimate.per_class, dtype=np.float64)
    gap = np.abs(per_class[present] - true_rates[present])
    out = {
        "noise_est": float(estimate.overall),
        "noise_true": truth,
        "noise_err": float(estimate.overall) - truth,
        "class_err_max": float(gap.max()) if gap.size else float("nan"),
    }
    ep = estimate.expected_precision
    if ep is not None and np.isfinite(ep):
        out["expected_precision"] = float(ep)
    return out


def detection(
    ws: Workspace,
    job: Job,
    name: str,
    scores: np.ndarray,
    flagged: np.ndarray,
    labels: np.ndarray,
    *,
    estimate: NoiseEstimate,
) -> dict[str, float]:
    """Ranking and flagged-set quality of one detector over the train rows, and its
    noise estimate against the truth (``noise_figures``).

    Args:
        scores, flagged: (N_train,) per train row, in train-row order: the detector's
            score (higher = more likely wrong) and its flag.
        labels: (N,) the noisy labels of every workspace row; a train row's label is
            wrong where it differs from ``ws.true``.
        estimate: the detector's noise estimate.

    The scores are kept for the runner's precision-recall plot.
    """
    given = labels[ws.train]
    wrong = given != ws.true[ws.train]
    (ws.folder / "scores").mkdir(exist_ok=True)
    np.savez(ws.folder / "scores" / f"{name}__{job.tag}.npz", scores=scores, wrong=wrong)
    tp = int((flagged & wrong).sum())
    precision = tp / max(int(flagged.sum()), 1)
    recall = tp / max(int(wrong.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "auroc": auroc(scores, wrong),
        "ap": average_precision(scores, wrong),
        "p_at_n": precision_at_n(scores, wrong),
        "flag_precision": precision,
        "flag_recall": recall,
        "flag_f1": f1,
        "flagged": int(flagged.sum()),
        **noise_figures(estimate, given, wrong, ws.n_classes),
    }


def _flags_estimate(flags: Flags) -> NoiseEstimate:
    return NoiseEstimate(flags.noise, flags.noise_rate, flags.expected_precision)


def retrieval(ws: Workspace, embeddings: np.ndarray) -> dict[str, float]:
    """Recall@K among the clean test rows, by their true labels."""
    test = ~ws.train
    _, nb = knn.search(embeddings[test], embeddings[test], k=max(RECALL_KS), exclude_self=True)
    return {f"recall@{k}": v for k, v in recall_at_k(nb, ws.true[test], RECALL_KS).items()}


def _x(ws: Workspace) -> np.ndarray:
    return np.ascontiguousarray(ws.features, dtype=np.float32)


def phase1(ws: Workspace, job: Job) -> dict[str, Any]:
    """noisyclean's Phase 1: the blended confidence C (saved for Phase 2)."""
    y = ws.noisy(job.tag)
    cfg = ConfidenceConfig(**{**job.confidence, "seed": job.seed})
    conf = score_confidences(_x(ws), y, train=ws.train, n_classes=ws.n_classes, config=cfg)
    blended = conf.top.dense()  # every class: the bench's K is small
    np.save(ws.folder / f"conf-{job.tag}.npy", blended)
    tr = ws.train
    own = blended[tr][np.arange(int(tr.sum())), y[tr]]
    flags = confident_flags(blended[tr], y[tr], ws.n_classes)
    return {
        "detection": detection(
            ws,
            job,
            "noisyclean-confidence",
            1.0 - own,
            flags.flagged,
            y,
            estimate=_flags_estimate(flags),
        )
    }


def knn_vote(ws: Workspace, job: Job) -> dict[str, Any]:
    """Baseline: a leave-one-out faiss 10-NN label vote on the raw features; its noise
    estimate is the flagged share (rows whose vote's winner is another class)."""
    y = ws.noisy(job.tag)
    tr = np.flatnonzero(ws.train)
    x = _x(ws)[tr]
    _, nb = knn.search(x, x, k=10, exclude_self=True)
    vote = knn.vote(nb, y[tr], ws.n_classes)
    own = vote[np.arange(len(tr)), y[tr]]
    flagged = vote.argmax(axis=1) != y[tr]
    return {
        "detection": detection(
            ws,
            job,
            "knn-vote",
            1.0 - own,
            flagged,
            y,
            estimate=flagged_share(flagged, y[tr], ws.n_classes),
        )
    }


def cleanlab_oof(ws: Workspace, job: Job) -> dict[str, Any]:
    """Baseline: cleanlab on 5-fold out-of-fold LogisticRegression probabilities.

    scikit-learn's defaults, as cleanlab's ``CleanLearning`` uses by default. Its noise
    estimate is cleanlab's own: the calibrated confident joint
    (``cleanlab.count.estimate_joint``, P(given label, true label)), overall one minus
    its trace, per given class one minus its diagonal over its row.
    """
    from cleanlab.count import estimate_joint
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = ws.noisy(job.tag)
    tr = np.flatnonzero(ws.train)
    probs = cross_val_predict(
        LogisticRegression(),
        _x(ws)[tr],
        y[tr],
        cv=StratifiedKFold(5, shuffle=True, random_state=job.seed),
        method="predict_proba",
    )
    quality = get_label_quality_scores(y[tr], probs)
    flagged = find_label_issues(y[tr], probs)
    return {
        "detection": detection(
            ws,
            job,
            "cleanlab",
            1.0 - quality,
            flagged,
            y,
            estimate=joint_estimate(estimate_joint(y[tr], probs)),
        )
    }


def joint_estimate(joint: np.ndarray) -> NoiseEstimate:
    """The noise a (K, K) joint P(given label = i, true label = j) implies: overall
    1 − trace, per given class i 1 − joint[i, i] / sum_j joint[i, j]."""
    joint = np.asarray(joint, dtype=np.float64)
    rows = joint.sum(axis=1)
    diag = np.diag(joint)
    per_class = np.divide(rows - diag, rows, out=np.zeros(len(rows)), where=rows > 0)
    return NoiseEstimate(float(1.0 - np.trace(joint) / joint.sum()), per_class)


def _train_loss(
    ws: Workspace, job: Job, loss: str, labels: np.ndarray
) -> tuple[TopClasses, np.ndarray]:
    dense = (
        np.load(ws.folder / f"conf-{job.tag}.npy")
        if loss == "smooth-proxy-anchor"
        else np.eye(ws.n_classes, dtype=np.float32)[labels]
    )
    conf = TopClasses.from_dense(dense, labels, width=ws.n_classes)
    cfg = TrainConfig(**{**job.train, "loss": loss, "seed": job.seed})
    head, _ = train_head(_x(ws), conf, rows=np.flatnonzero(ws.train), config=cfg)
    return conf, embed(head, _x(ws))


def smooth_proxy_anchor(ws: Workspace, job: Job) -> dict[str, Any]:
    """noisyclean's Phase 2: Smooth Proxy-Anchor, then the suspects it reports.

    The suspects' flag rule runs over the train rows only (``usable=train``): the test
    rows are clean here and would dilute its noise estimate.
    """
    y = ws.noisy(job.tag)
    conf, emb = _train_loss(ws, job, "smooth-proxy-anchor", y)
    tr = ws.train
    found = find_suspects(
        emb,
        conf,
        usable=tr,
        train=tr,
        classes=[str(c) for c in range(ws.n_classes)],
        config=SuspectConfig(**job.suspects),
    )
    return {
        "retrieval": retrieval(ws, emb),
        "detection": detection(
            ws,
            job,
            "noisyclean-suspicion",
            found.suspicion[tr],
            found.is_suspect[tr],
            y,
            estimate=_flags_estimate(found.flags),
        ),
    }


def _loss_method(loss: str, *, clean: bool = False) -> Callable[[Workspace, Job], dict[str, Any]]:
    def run(ws: Workspace, job: Job) -> dict[str, Any]:
        labels = ws.true if clean else ws.noisy(job.tag)
        return {"retrieval": retrieval(ws, _train_loss(ws, job, loss, labels)[1])}

    run.__doc__ = f"{loss} trained on {'clean' if clean else 'noisy'} labels."
    return run


def raw_features(ws: Workspace, job: Job) -> dict[str, Any]:
    """Retrieval with the frozen backbone features themselves."""
    return {"retrieval": retrieval(ws, _x(ws))}


@dataclass(frozen=True)
class Method:
    """One method the benchmark compares, and how the runner schedules it.

    Attributes:
        run: runs the method on a workspace and returns its figures.
        noisy: reads the noisy labels, so it runs once per noise setting and seed;
            otherwise it reads clean labels only and its figures count for every
            noise setting.
        per_seed: (clean-label methods) runs once per seed; otherwise once, seed 0.
        needs_phase1: reads Phase 1's confidences (``conf-<tag>.npy``), so the runner
            schedules ``PHASE1`` before it on the same labels.
    """

    run: Callable[[Workspace, Job], dict[str, Any]]
    noisy: bool = True
    per_seed: bool = True
    needs_phase1: bool = False


#: Every method by name; the runner keeps this order, so ``PHASE1`` comes first.
METHODS: dict[str, Method] = {
    PHASE1: Method(phase1),
    "knn-vote": Method(knn_vote),
    "cleanlab": Method(cleanlab_oof),
    "smooth-proxy-anchor": Method(smooth_proxy_anchor, needs_phase1=True),
    "proxy-anchor": Method(_loss_method("proxy-anchor")),
    "multi-similarity": Method(_loss_method("multi-similarity")),
    "proxy-anchor-clean": Method(_loss_method("proxy-anchor", clean=True), noisy=False),
    "raw-features": Method(raw_features, noisy=False, per_seed=False),
}

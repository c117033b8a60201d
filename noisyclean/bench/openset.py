"""Open-set label noise for ``noisyclean bench``: ``--noise openset:RATE``.

Images of classes outside the label set, carrying in-set labels. The held-out classes
and the planting are the outlier benchmark's (``noisyclean.bench.outliers``): the first
of its pairs the manifest has (``default_pairs``: Shirt and Sandal on Fashion-MNIST),
``choose_rows`` for which train rows are kept and which held-out rows are planted
(``RATE`` of the kept train rows; every in-set train row is kept while the held-out
rows suffice), and ``in_set_labels`` for their labels, each a uniformly random in-set
class. The held-out rows that are not planted, in train and test alike, are dropped,
so the label set has K − 2 classes.

In the detection bench a planted row counts as a wrong label (its true class is not in
the label set; its ``true`` is -1), so the true noise rate is the planted share.
Retrieval (Recall@K) runs on the in-set test rows. The methods that read clean labels
(``proxy-anchor-clean``, ``raw-features``) run on the clean view (``CLEAN_VIEW``): the
in-set rows alone, train and test.

A view is a file ``view-<name>.npz`` in the workspace: ``rows`` (the workspace rows it
keeps, ascending), ``true`` (in-set class codes; -1 for a planted row), ``train``,
``classes`` (the in-set class names, sorted); ``noisyclean.bench.methods.Workspace``
loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from noisyclean.bench.outliers import Pool, choose_rows, default_pairs, in_set_labels, max_rows
from noisyclean.bench.outliers import parse_pair as _parse_pair
from noisyclean.errors import NoisyCleanError

#: The view of the in-set rows alone, for the clean-label methods of open-set settings.
CLEAN_VIEW = "openset-clean"


@dataclass(frozen=True)
class View:
    """Some rows of the workspace, relabelled over the in-set classes.

    Attributes:
        rows: (M,) workspace rows kept, ascending.
        true: (M,) in-set class code of each row; -1 for a planted held-out row.
        train: (M,) the row is a train row.
        labels: (M,) given labels: ``true``, and a random in-set class on planted rows.
        classes: in-set class names, sorted (the codes' order).
        held_out: the held-out class names.
    """

    rows: np.ndarray
    true: np.ndarray
    train: np.ndarray
    labels: np.ndarray
    classes: list[str]
    held_out: list[str]

    @property
    def planted(self) -> np.ndarray:
        """(M,) the row is a planted held-out row."""
        return self.true < 0

    def save(self, path: Path) -> None:
        np.savez(
            path,
            rows=self.rows,
            true=self.true,
            train=self.train,
            classes=np.array(self.classes, dtype=str),
        )


def held_out_classes(classes: list[str]) -> list[str]:
    """The two classes held out of the label set: the outlier benchmark's choice."""
    pairs = [p for p in default_pairs(classes) if "," in p]
    if not pairs:
        raise NoisyCleanError("openset noise needs at least 4 classes")
    return _parse_pair(pairs[0])


def openset_view(
    names: np.ndarray, train: np.ndarray, rate: float, seed: int, held: list[str] | None = None
) -> View:
    """Plant ``rate`` of the train rows from the held-out classes under in-set labels.

    Args:
        names: (N,) each workspace row's clean class name.
        train: (N,) the row is a train row.
        rate: share of the kept train rows that are planted, in (0, 0.5).
        seed: seeds which rows are planted and their labels (as the outlier benchmark's
            ``choose_rows`` and ``in_set_labels`` with the same seed).
        held: the held-out class names; None: ``held_out_classes``.
    """
    names = np.asarray(names).astype(str)
    held = held or held_out_classes(sorted(set(names)))
    tr = np.flatnonzero(train)
    pool = Pool(
        true=names[tr],
        usable=np.ones(len(tr), dtype=bool),
        junk=np.zeros(len(tr), dtype=bool),
        n_manifest=len(tr),
    )
    n_rows = max_rows(pool, held, rate)
    picked, is_out = choose_rows(pool, held, n_rows, rate, seed)
    if not is_out.any():
        raise NoisyCleanError(f"openset:{rate:g} plants no row among {len(tr)} train rows")
    labels, classes = in_set_labels(pool.true[picked], is_out, np.random.default_rng(seed + 1))
    test = np.flatnonzero(~np.asarray(train, dtype=bool) & np.isin(names, classes))
    rows = np.concatenate([tr[picked], test])
    order = np.argsort(rows, kind="stable")
    true = np.concatenate(
        [np.where(is_out, -1, labels), np.searchsorted(classes, names[test]).astype(np.int64)]
    )
    given = np.concatenate([labels, true[len(picked) :]])
    is_train = np.concatenate([np.ones(len(picked), bool), np.zeros(len(test), bool)])
    return View(
        rows=rows[order],
        true=true[order].astype(np.int64),
        train=is_train[order],
        labels=given[order].astype(np.int64),
        classes=classes,
        held_out=list(held),
    )


def clean_view(names: np.ndarray, train: np.ndarray, held: list[str] | None = None) -> View:
    """The in-set rows alone, train and test, with their true labels."""
    names = np.asarray(names).astype(str)
    held = held or held_out_classes(sorted(set(names)))
    classes = sorted(set(names) - set(held))
    rows = np.flatnonzero(np.isin(names, classes))
    true = np.searchsorted(classes, names[rows]).astype(np.int64)
    return View(
        rows=rows,
        true=true,
        train=np.asarray(train, dtype=bool)[rows],
        labels=true.copy(),
        classes=classes,
        held_out=list(held),
    )

"""noisyclean: find and fix wrong labels in large image datasets.

The public API is exported lazily (PEP 562), so ``import noisyclean`` stays cheap and
loads torch only when a name that needs it is first used::

    import noisyclean

    table = noisyclean.embed_images("out/run", "new_images/")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "score_manifest": "noisyclean.pipeline",
    "train_run": "noisyclean.pipeline",
    "embed_images": "noisyclean.pipeline",
    "ScoreResult": "noisyclean.pipeline",
    "TrainResult": "noisyclean.pipeline",
    "load_manifest": "noisyclean.manifest",
    "Manifest": "noisyclean.manifest",
    "FeatureConfig": "noisyclean.features",
    "ConfidenceConfig": "noisyclean.configs",
    "TrainConfig": "noisyclean.configs",
    "SuspectConfig": "noisyclean.configs",
    "read_conf": "noisyclean.artifacts",
    "write_conf": "noisyclean.artifacts",
    "read_run_config": "noisyclean.artifacts",
    "read_suspects": "noisyclean.artifacts",
    "read_duplicates": "noisyclean.artifacts",
    "find_duplicates": "noisyclean.duplicates",
    "outlier_scores": "noisyclean.outliers",
    "build_review": "noisyclean.review",
    "write_review": "noisyclean.review",
    "apply_decisions": "noisyclean.apply",
    "NoisyCleanError": "noisyclean.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'noisyclean' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

"""noisyclean: find and fix wrong labels in large image datasets."""

import os

# Before torch and faiss load OpenMP: idle threads that spin slow torch several-fold
# whenever another process shares the cores (Phase 1 on 20k rows under load: 218 s -> 76 s).
# setdefault: a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

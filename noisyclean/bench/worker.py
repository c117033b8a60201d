"""Run one benchmark job in this process and print its figures as one JSON line.

``python -m noisyclean.bench.worker '<job json>'``. The runner starts one process
per job so that each method's wall time and peak RSS are its own.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

# Before methods imports torch and faiss, which load OpenMP: idle OpenMP threads that spin
# slowed Phase 1 on 20k rows under load from 76 s to 218 s. setdefault: a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from noisyclean.bench.methods import METHODS, Job, Workspace


def _status_mb(key: str) -> float | None:
    """A memory figure of this process from /proc/self/status (Linux), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM), so the peak is the method's alone."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def main(argv: list[str]) -> int:
    job = Job.from_json(argv[0])
    ws = Workspace.load(job.work, job.view)
    # Imports (torch, faiss, scikit-learn) pass a transient peak well above what they
    # keep; without the reset, ru_maxrss would hide every method's own use under it.
    reset = _reset_peak()
    start_mb = _status_mb("VmRSS") if reset else None
    start = time.perf_counter()
    result = METHODS[job.method].run(ws, job)
    seconds = time.perf_counter() - start
    peak_mb = _status_mb("VmHWM") if reset else None
    if peak_mb is None or start_mb is None:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start_mb = 0.0
    result["cost"] = {
        "seconds": seconds,
        "peak_rss_mb": peak_mb,
        # What the method itself adds above the imports and the loaded features.
        "rss_increase_mb": max(peak_mb - start_mb, 0.0),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

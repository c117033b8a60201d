"""Run one benchmark job in this process and print its figures as one JSON line.

``python -m noisyclean.bench.worker '<job json>'``. The runner starts one process
per job so that each method's wall time and peak RSS are its own.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from noisyclean.bench.methods import METHODS, Job, Workspace


def main(argv: list[str]) -> int:
    job = Job.from_json(argv[0])
    ws = Workspace.load(job.work)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = METHODS[job.method][0](ws, job)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["cost"] = {
        "seconds": seconds,
        "peak_rss_mb": peak_kib / 1024,
        "startup_rss_mb": rss_before / 1024,
        # What the method itself adds above the imports and the loaded features.
        "rss_increase_mb": max(peak_kib - rss_before, 0) / 1024,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""fastdup's own features of a run (its ``atrain_features.dat``) as .npy in manifest order.

Runs in the fastdup venv, after ``run_peers.py fastdup MANIFEST -o RUN`` (image mode):

    /work/peers/fastdup-venv/bin/python benchmarks/peers/fastdup_features.py \
        MANIFEST RUN/fastdup-work OUT.npy

``score_dups.py --features OUT.npy`` then applies the benchmark's natural-pair rule in
fastdup's own feature space (cosine of its 576-d features).
"""

import os
import sys

os.environ.setdefault("SENTRY_OPT_OUT", "1")

import fastdup
import numpy as np
import pandas as pd

manifest, work, out = sys.argv[1:4]
m = pd.read_csv(manifest, dtype=str, keep_default_na=False)
names, x = fastdup.load_binary_feature(work)
pos = {os.path.realpath(p): i for i, p in enumerate(names)}
order = [pos[os.path.realpath(p)] for p in m["path"]]
np.save(out, np.asarray(x, dtype=np.float32)[order])
print(len(order), "rows", np.asarray(x).shape)

#!/usr/bin/env bash
# The 20k-row peer runs of docs/peers/results-20k.md, end to end (about 35 min on 2 cores:
# FiftyOne's find_duplicates takes 10 to 30 s per threshold at 22k rows).
# Needs the benchmarks' work folders and caches (data/dupbench/..., data/feature-cache,
# data/outliers-bench/junk); nothing in them is written.
set -eu
P=${PEERS:-/work/peers}
R=$(cd "$(dirname "$0")" && pwd)
MAIN=$(cd "$R/../.." && pwd)
O=$P/results20k
mkdir -p "$O" "$P/home"
export HOME=$P/home
PY="nice -n 15 $MAIN/.venv/bin/python"
FD="nice -n 15 $P/fastdup-venv/bin/python"
FO="nice -n 15 $P/fiftyone-venv/bin/python"
W=$MAIN/data/dupbench
for s in 4 1; do
  work=$W/rows20000-copies0.1-seed0-scale$s; D=$P/dup20k-x$s
  $PY "$R/dup_sets.py" "$work" -o "$D"
  $FD "$R/run_peers.py" fastdup "$D/manifest.csv" -o "$O/fastdup-feat-x$s" --features "$D/features.npy" \
    --ids "$D/ids.csv" --pairs "$D/pairs.csv" --threads 2 --sweep 0.8 0.995 0.005
  $PY "$R/score_dups.py" "$work" "$O/fastdup-feat-x$s" --tool fastdup --features "$D/features.npy" \
    --default 0.9 -o "$O/score-fastdup-feat-x$s.json"
  $FO "$R/run_peers.py" fiftyone "$D/manifest.csv" -o "$O/fiftyone-feat-x$s" --features "$D/features.npy" \
    --ids "$D/ids.csv" --pairs "$D/pairs.csv" --sweep 0.8 0.99 0.01 --sweep-pairs
  $PY "$R/score_dups.py" "$work" "$O/fiftyone-feat-x$s" --tool fiftyone --features "$D/features.npy" \
    --default 0.8 -o "$O/score-fiftyone-feat-x$s.json"
  $PY "$R/centring_probe.py" "$work" -o "$O/centring-x$s.json" --cache "$P/centring-cache"
done
# fastdup on its own (bundled ONNX) features, x4 images
D=$P/dup20k-x4
$FD "$R/run_peers.py" fastdup "$D/manifest.csv" -o "$O/fastdup-images-x4" --pairs "$D/pairs.csv" \
  --threads 2 --sweep 0.8 0.995 0.005
$FD "$R/fastdup_features.py" "$D/manifest.csv" "$O/fastdup-images-x4/fastdup-work" "$O/fastdup-images-x4/own-features.npy"
$PY "$R/score_dups.py" "$W/rows20000-copies0.1-seed0-scale4" "$O/fastdup-images-x4" --tool fastdup \
  --features "$O/fastdup-images-x4/own-features.npy" --default 0.9 -o "$O/score-fastdup-images-x4.json"
# outliers
$PY "$R/outlier_sets.py" export -o "$P/out20k"
for sc in Shirt-Sandal Bag-Trouser Coat-Sneaker junk; do
  D=$P/out20k/$sc
  $FD "$R/run_peers.py" fastdup "$D/manifest.csv" -o "$O/fastdup-out/$sc" --features "$D/features.npy" --ids "$D/ids.csv" --threads 2
  $FO "$R/run_peers.py" fiftyone "$D/manifest.csv" -o "$O/fiftyone-out/$sc" --features "$D/features.npy" --ids "$D/ids.csv" --only-scores
done
$PY "$R/outlier_sets.py" score "$P/out20k" --runs fastdup="$O/fastdup-out" fiftyone="$O/fiftyone-out" -o "$O/outliers-scores.json"
$PY "$R/collect_20k.py" "$O" -o "$MAIN/docs/peers/results-20k.json"

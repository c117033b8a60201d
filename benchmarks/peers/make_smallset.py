"""Small image sets for trying peer tools (fastdup, FiftyOne) on noisyclean's benchmarks.

Needs only numpy, pandas-free stdlib csv and Pillow, so it runs in any venv.

Writes under ``--out``:

- ``dup/images/*`` : ``--rows`` Fashion-MNIST originals (copied as PNG) and perturbed
  near-copies of ``--copies`` of them (a tenth of those get a second copy), made as
  ``benchmarks/duplicates.py`` makes them (random non-empty subset of crop <= 8%/side,
  resize x0.5-2 bilinear, JPEG q60-90; order crop, resize, JPEG);
- ``dup/manifest.csv`` (id,path,label,origin,is_copy,ops) and ``dup/pairs.csv``
  (id_a,id_b: every true pair: original-copy and copy-copy);
- ``out/images/*`` and ``out/manifest.csv`` (id,path,label,true_label,is_outlier):
  ``--out-rows`` rows, ``--rate`` of them from the held-out classes (``--held``) under a
  random in-set label, the rest from the 8 other classes with their true labels.

    python3 benchmarks/peers/make_smallset.py --out /work/peers/smallset
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

OPS = ("crop", "resize", "jpeg")


def make_copy(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, str, str]:
    ops = [op for op in OPS if rng.random() < 0.5]
    while not ops:
        ops = [op for op in OPS if rng.random() < 0.5]
    img = image
    if "crop" in ops:
        w, h = img.size
        most = max(int(0.08 * min(w, h)), 1)
        sides = rng.integers(0, most + 1, size=4)
        if sides.sum() == 0:
            sides[rng.integers(4)] = 1
        left, top, right, bottom = (int(v) for v in sides)
        img = img.crop((left, top, w - right, h - bottom))
    if "resize" in ops:
        factor = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        w, h = img.size
        img = img.resize(
            (max(round(w * factor), 1), max(round(h * factor), 1)), Image.Resampling.BILINEAR
        )
    buf = io.BytesIO()
    if "jpeg" in ops:
        img.save(buf, "JPEG", quality=int(rng.integers(60, 91)))
        return buf.getvalue(), ".jpg", "+".join(ops)
    img.save(buf, "PNG")
    return buf.getvalue(), ".png", "+".join(ops)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--manifest", type=Path, default=Path("/work/main/data/fm20k/manifest.csv"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--copies", type=int, default=46)
    p.add_argument("--out-rows", type=int, default=1000)
    p.add_argument("--rate", type=float, default=0.02)
    p.add_argument("--held", default="Shirt,Sandal")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    with open(a.manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["path"] = str((a.manifest.parent / r["path"]).resolve())
    rng = np.random.default_rng(a.seed)

    # ---- near-duplicates
    d = a.out / "dup"
    (d / "images").mkdir(parents=True, exist_ok=True)
    take = np.sort(rng.choice(len(rows), size=a.rows, replace=False))
    man, pairs = [], []
    for i in take:
        r = rows[i]
        dst = d / "images" / f"{r['id']}.png"
        shutil.copyfile(r["path"], dst)
        man.append(
            dict(
                id=r["id"], path=str(dst), label=r["true_label"], origin=r["id"], is_copy=0, ops=""
            )
        )
    fam = rng.choice(a.rows, size=a.copies, replace=False)
    twice = rng.random(a.copies) < 0.1
    for j, o in enumerate(fam):
        orig = man[o]
        ids = [orig["id"]]
        for c in range(2 if twice[j] else 1):
            crng = np.random.default_rng([a.seed, int(o), c])
            with Image.open(orig["path"]) as im:
                data, ext, ops = make_copy(im.convert("L"), crng)
            cid = f"copy-{orig['id']}-{c}"
            dst = d / "images" / f"{cid}{ext}"
            dst.write_bytes(data)
            man.append(
                dict(
                    id=cid,
                    path=str(dst),
                    label=orig["label"],
                    origin=orig["id"],
                    is_copy=1,
                    ops=ops,
                )
            )
            pairs += [(x, cid) for x in ids]
            ids.append(cid)
    with open(d / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(man[0]))
        w.writeheader()
        w.writerows(man)
    with open(d / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id_a", "id_b"])
        w.writerows(pairs)
    print(f"dup: {len(man)} images ({len(man) - a.rows} copies), {len(pairs)} true pairs")

    # ---- outliers
    o = a.out / "out"
    (o / "images").mkdir(parents=True, exist_ok=True)
    held = a.held.split(",")
    classes = sorted({r["true_label"] for r in rows})
    inset = [c for c in classes if c not in held]
    n_out = max(round(a.rate * a.out_rows), 1)
    pin = [i for i, r in enumerate(rows) if r["true_label"] in inset]
    pout = [i for i, r in enumerate(rows) if r["true_label"] in held]
    chosen = [(i, 0) for i in rng.choice(pin, a.out_rows - n_out, replace=False)]
    chosen += [(i, 1) for i in rng.choice(pout, n_out, replace=False)]
    man = []
    for i, is_out in chosen:
        r = rows[i]
        dst = o / "images" / f"{r['id']}.png"
        shutil.copyfile(r["path"], dst)
        label = inset[rng.integers(len(inset))] if is_out else r["true_label"]
        man.append(
            dict(
                id=r["id"],
                path=str(dst),
                label=label,
                true_label=r["true_label"],
                is_outlier=is_out,
            )
        )
    with open(o / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(man[0]))
        w.writeheader()
        w.writerows(man)
    print(f"out: {len(man)} images, {n_out} outliers from {held}")


if __name__ == "__main__":
    main()

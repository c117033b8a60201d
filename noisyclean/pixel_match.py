"""The pixel check of near-duplicate candidates: is one image a crop, a resize, a
re-encode or a mirror image of the other?

A backbone's pooled feature moves more under an 8% crop than between two different
garments of one kind, so no cosine threshold separates copies from look-alikes
(docs/design.md §4.9). The listed pairs the backbone finds close (cosine at least
``duplicates.CANDIDATE_SIMILARITY``) are checked here, on small greyscale thumbnails:

1. **Thumbnails.** Each image becomes ``SIDE`` × ``SIDE`` greyscale (bilinear, the
   aspect ratio dropped: a crop of a few percent changes it little).
2. **Orientation.** A mirrored copy is compared mirrored back: the second image is
   mirrored when the column profiles (mean of each column) fit better so, one profile
   against the best window of the other, either way round; the rest runs once, on the
   orientation chosen.
3. **Alignment.** A copy made by cropping is an axis-aligned window of the original,
   stretched back to the full thumbnail: a window ``[l, 1 − r]`` across and ``[t, 1 − b]``
   down, each side cut by 0 to ``MAX_CROP`` in steps of ``STEP``. The window is found
   one axis at a time, on the images' column and row means (Pearson correlation of the
   1-D profiles over every window of the axis), twice, each axis's second estimate
   taken on the other axis's window; then the ``TOP`` best windows of each axis are
   tried in 2-D.
4. **Score.** The Pearson correlation of the window and the other image, both
   band-passed (minus their ``BLUR`` × ``BLUR`` mean, so that what is compared is edges
   and texture rather than the silhouette every garment of a kind shares). Both
   directions are tried (either image may be the crop); the pair's match is the best.

A match is in [−1, 1]; a resized, re-encoded or mirrored copy scores about 0.99, a
cropped one 0.95–0.99, two different images of one kind rarely above 0.94 (the
threshold's calibration is in docs/design.md). Everything runs as batched tensor
products, about 0.5 ms a pair on two CPU cores before the orientation step, which adds
about a sixth (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

#: Thumbnail side in pixels.
SIDE = 48
#: Largest share of a side a crop may have cut, per side; and the step of the search.
MAX_CROP = 0.10
STEP = 0.01
#: Windows per axis tried in 2-D after the 1-D search.
TOP = 2
#: Side of the mean filter subtracted before correlating.
BLUR = 5
#: Pairs compared at a time.
CHUNK = 2048
#: The resampling filter of the thumbnails.
FILTER = Image.Resampling.BILINEAR
#: What a cached thumbnail or match depends on.
SETTINGS = (
    f"side={SIDE} filter={FILTER.name} crop={MAX_CROP} step={STEP} top={TOP} blur={BLUR} mirror=1"
)

Progress = Callable[[int, int], None]


def thumbnail(image: Image.Image) -> np.ndarray:
    """(SIDE, SIDE) uint8 greyscale thumbnail of an image (bilinear: area-weighted when
    reducing, smooth when enlarging a small image, where a box filter would give blocks
    that a crop shifts by a fraction)."""
    grey = image.convert("L").resize((SIDE, SIDE), FILTER)
    return np.asarray(grey, dtype=np.uint8)


def _windows() -> torch.Tensor:
    """(W, SIDE, SIDE) linear resampling matrices: row u of matrix w samples window w's
    source position for output pixel u (pixel centres, edges clamped)."""
    cuts = np.round(np.arange(0.0, MAX_CROP + 1e-9, STEP), 6)
    mats = []
    u = (np.arange(SIDE) + 0.5) / SIDE
    rows = np.arange(SIDE)
    for lo in cuts:
        for hi in cuts:
            pos = (lo + u * (1.0 - lo - hi)) * SIDE - 0.5
            i0 = np.clip(np.floor(pos).astype(np.int64), 0, SIDE - 1)
            i1 = np.clip(i0 + 1, 0, SIDE - 1)
            w = np.clip(pos - np.floor(pos), 0.0, 1.0)
            m = np.zeros((SIDE, SIDE), dtype=np.float32)
            np.add.at(m, (rows, i0), 1.0 - w)
            np.add.at(m, (rows, i1), w)
            mats.append(m)
    return torch.from_numpy(np.stack(mats))


def _pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last dimension (broadcast)."""
    x = x - x.mean(-1, keepdim=True)
    y = y - y.mean(-1, keepdim=True)
    den = ((x * x).sum(-1) * (y * y).sum(-1)).clamp_min(1e-12).sqrt()
    return (x * y).sum(-1) / den


def _bandpass(t: torch.Tensor) -> torch.Tensor:
    """(P, S, S) minus its BLUR × BLUR mean (the mean over what lies inside the image)."""
    mean = torch.nn.functional.avg_pool2d(
        t[:, None], BLUR, stride=1, padding=BLUR // 2, count_include_pad=False
    )[:, 0]
    return t - mean


def _one_way(a: torch.Tensor, b: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """(P,) best band-passed correlation of ``b`` with a window of ``a``."""
    bx, by = b.mean(1), b.mean(2)  # column and row profiles
    ax, ay = a, a
    cx = cy = torch.empty(0, device=a.device)
    for _ in range(2):
        cx = _pearson(torch.einsum("ps,wts->pwt", ax.mean(1), win), bx[:, None])
        cy = _pearson(torch.einsum("ps,wts->pwt", ay.mean(2), win), by[:, None])
        ax = win[cy.argmax(1)] @ a  # rows resampled: columns now profiled over b's rows
        ay = a @ win[cx.argmax(1)].transpose(1, 2)
    ix, iy = cx.topk(TOP, 1).indices, cy.topk(TOP, 1).indices
    target = _bandpass(b).flatten(1)
    best = torch.full((len(a),), -1.0, device=a.device)
    for p in range(TOP):
        across = win[ix[:, p]].transpose(1, 2)
        for q in range(TOP):
            warped = win[iy[:, q]] @ a @ across
            best = torch.maximum(best, _pearson(_bandpass(warped).flatten(1), target))
    return best


def _mirrored(a: torch.Tensor, b: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """(P,) bool: ``b``'s column profile fits a window of ``a``'s (or ``a``'s fits
    ``b``'s) better mirrored than as it is. Mirroring a profile mirrors the windows too
    (left and right cuts swap), so the best window's fit needs each image windowed once."""
    pa, pb = a.mean(1), b.mean(1)
    wa = torch.einsum("ps,wts->pwt", pa, win)
    wb = torch.einsum("ps,wts->pwt", pb, win)
    plain = torch.maximum(_pearson(wa, pb[:, None]).amax(1), _pearson(wb, pa[:, None]).amax(1))
    pa, pb = pa.flip(-1), pb.flip(-1)
    mirror = torch.maximum(_pearson(wa, pb[:, None]).amax(1), _pearson(wb, pa[:, None]).amax(1))
    return mirror > plain


def match(
    a: np.ndarray,
    b: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> np.ndarray:
    """How well each pair of thumbnails matches as copies of one image.

    Args:
        a, b: (P, SIDE, SIDE) uint8 (or float) thumbnails, pair by pair.
        device: where the products run (a CUDA device is many times faster).
        progress: called with (pairs done, pairs) after each chunk.

    Returns:
        (P,) float32 in [-1, 1]: the best correlation of one image with a crop of the
        other, either way round, the second mirrored where that fits better (see the
        module's docstring).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 3 or a.shape[1:] != (SIDE, SIDE):
        raise ValueError(f"need two (P, {SIDE}, {SIDE}) arrays, got {a.shape} and {b.shape}")
    out = np.empty(len(a), dtype=np.float32)
    win = _windows().to(device)
    with torch.no_grad():
        for start in range(0, len(a), CHUNK):
            stop = min(start + CHUNK, len(a))
            x = torch.from_numpy(np.asarray(a[start:stop], dtype=np.float32) / 255.0).to(device)
            y = torch.from_numpy(np.asarray(b[start:stop], dtype=np.float32) / 255.0).to(device)
            y = torch.where(_mirrored(x, y, win)[:, None, None], y.flip(-1), y)
            both = torch.maximum(_one_way(x, y, win), _one_way(y, x, win))
            out[start:stop] = both.cpu().numpy()
            if progress:
                progress(stop, len(a))
    return out

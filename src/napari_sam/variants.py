"""Image variants a microscope produces from one annotated field, with their labels.

Each function takes a 2D ``image`` (H, W) and its instance ``labels`` (H, W; 0 is
background) and returns a new (image, labels) pair: the same objects magnified, in a
larger field, at a low photon count, inverted, stained RGB, or moving through time.
Random ones take a ``seed`` and are deterministic given it. :data:`VARIANTS` and
:func:`standard_variants` name the standard set used by the quality benchmarks
(``benchmarks/bench_prompts.py``). Pure numpy/scipy/scikit-image, no Qt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .masks import shifted

__all__ = [
    "VARIANTS", "corrupted_labels", "inverted", "low_photon", "magnify", "moving", "rgb_stain",
    "standard_variants", "tile",
]

Pair = tuple[np.ndarray, np.ndarray]

# Optical densities (per unit stain, R, G, B) of haematoxylin and eosin, Ruifrok & Johnston (2001).
HAEMATOXYLIN_OD = (0.650, 0.704, 0.286)
EOSIN_OD = (0.072, 0.990, 0.105)


def _check(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim != 2 or image.shape != labels.shape:
        raise ValueError(f"expected a 2D image and labels of the same shape, got {image.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    return image, labels


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` (float) rounded and clipped into an integer ``dtype``, or as float32."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(np.float32)


def _label_dtype(n: int, like: np.dtype) -> np.dtype:
    """``like`` when it holds ids up to ``n``, else the smallest unsigned type that does."""
    if np.issubdtype(like, np.integer) and n <= np.iinfo(like).max:
        return np.dtype(like)
    return np.dtype(np.uint16 if n <= np.iinfo(np.uint16).max else np.uint32)


def magnify(image: np.ndarray, labels: np.ndarray, factor: float, order: int = 1) -> Pair:
    """The field seen at ``factor`` times the magnification: objects ``factor`` times larger.

    The image is interpolated with spline ``order`` (1 or 3) and kept in its dtype; the
    labels with order 0, so each object's area grows by about ``factor ** 2``. The output
    side is ``round(factor * side)``; pixel edges stay aligned (an integer factor repeats
    each label pixel ``factor`` times along each axis).
    """
    image, labels = _check(image, labels)
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    zoomed = ndi.zoom(image.astype(np.float32), factor, order=order, mode="nearest", grid_mode=True)
    zlabels = ndi.zoom(labels, factor, order=0, mode="nearest", grid_mode=True)
    return _cast(zoomed, image.dtype), zlabels


def _reflect_index(n_out: int, n: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """For each output coordinate 0..n_out-1: its source coordinate and its copy number."""
    y = np.arange(n_out)
    copy = y // n
    if mode == "wrap":
        return y % n, copy
    m = y % (2 * n)
    return np.where(m < n, m, 2 * n - 1 - m), copy


def tile(image: np.ndarray, labels: np.ndarray, side: int | tuple[int, int] = 2048,
         mode: str = "reflect") -> Pair:
    """A ``side`` x ``side`` field made of copies of the field, each copy's objects distinct.

    ``mode`` "reflect" mirrors neighbouring copies (no seams in the image); "wrap" repeats
    them. The original sits at the top left; the field is cut at ``side``. An object cut by
    a seam is one object with its mirror image (one blob in the image): objects that
    do not touch the field's edge appear once per copy, those that do merge across the seam.
    Labels are renumbered 1..N.
    """
    image, labels = _check(image, labels)
    if mode not in ("reflect", "wrap"):
        raise ValueError(f"mode must be 'reflect' or 'wrap', got {mode!r}")
    out_h, out_w = (side, side) if np.isscalar(side) else side
    h, w = labels.shape
    src_r, copy_r = _reflect_index(int(out_h), h, mode)
    src_c, copy_c = _reflect_index(int(out_w), w, mode)
    out_image = image[np.ix_(src_r, src_c)]
    orig = labels[np.ix_(src_r, src_c)].astype(np.int64)
    # A distinct id per (copy, object); then merge ids that meet across a seam with the same object.
    n_ids = int(orig.max()) + 1
    copy_id = copy_r[:, None] * (int(copy_c.max()) + 1) + copy_c[None, :]
    ids = np.where(orig > 0, copy_id * n_ids + orig, 0)
    pairs = []
    for axis, copies in ((0, copy_r), (1, copy_c)):
        seams = np.nonzero(np.diff(copies))[0]  # last index before each seam
        a = np.take(ids, seams, axis=axis)
        b = np.take(ids, seams + 1, axis=axis)
        same = (a > 0) & (np.take(orig, seams, axis=axis) == np.take(orig, seams + 1, axis=axis))
        pairs.append(np.stack([a[same], b[same]]))
    used, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.reshape(ids.shape)
    edges = np.concatenate(pairs, axis=1)
    edges = np.searchsorted(used, edges)  # ids -> node numbers
    graph = coo_matrix((np.ones(edges.shape[1]), (edges[0], edges[1])), shape=(len(used), len(used)))
    _, component = connected_components(graph, directed=False)
    # Renumber 1..N; the background (id 0) never meets a seam edge, so it stays alone.
    new_id = np.zeros(len(used), dtype=np.int64)
    fg = used > 0
    _, merged = np.unique(component[fg], return_inverse=True)
    new_id[fg] = merged.ravel() + 1
    out_labels = new_id[inverse]
    n = int(new_id.max())
    return out_image, out_labels.astype(_label_dtype(n, labels.dtype))


def low_photon(image: np.ndarray, labels: np.ndarray, photons: float = 15.0, seed: int = 0) -> Pair:
    """The field imaged with few photons: Poisson noise at ``photons`` per object pixel.

    Intensities are rescaled so that the mean inside the objects is ``photons`` expected
    counts, drawn from a Poisson distribution, and scaled back to the original range (in
    the image's dtype, now in steps of one photon).
    """
    image, labels = _check(image, labels)
    values = image.astype(np.float64)
    inside = labels > 0
    level = float(values[inside].mean()) if inside.any() else float(values.mean())
    if level <= 0:
        raise ValueError("the objects' mean intensity must be positive")
    gain = photons / level
    counts = np.random.default_rng(seed).poisson(np.clip(values, 0, None) * gain)
    return _cast(counts / gain, image.dtype), labels.copy()


def inverted(image: np.ndarray, labels: np.ndarray) -> Pair:
    """Dark objects on a bright background: the image mirrored within its own range."""
    image, labels = _check(image, labels)
    values = image.astype(np.float64)
    return _cast(values.max() + values.min() - values, image.dtype), labels.copy()


def rgb_stain(image: np.ndarray, labels: np.ndarray, strength: float = 1.6, counterstain: float = 0.2,
              percentiles: tuple[float, float] = (1.0, 99.8)) -> Pair:
    """An RGB (H, W, 3) uint8 rendering like a haematoxylin stain: dark purple objects on a
    light pink background.

    The intensity, stretched between ``percentiles`` to 0..1, is the haematoxylin density
    (``strength`` optical density at most); a uniform eosin ``counterstain`` tints the
    background; colours follow Beer-Lambert, 255 * exp(-OD).
    """
    image, labels = _check(image, labels)
    lo, hi = np.percentile(image, percentiles)
    density = np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-12), 0, 1)
    od = strength * density[..., None] * np.array(HAEMATOXYLIN_OD, np.float32) \
        + counterstain * np.array(EOSIN_OD, np.float32)
    return np.clip(np.rint(255 * np.exp(-od)), 0, 255).astype(np.uint8), labels.copy()


def _background(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, sigma: float = 8.0,
                halo: int = 5) -> np.ndarray:
    """The field without its objects: their pixels (and a ``halo`` of blur around them)
    filled with the smooth local background level plus noise drawn from the background's own."""
    values = image.astype(np.float64)
    keep = ~ndi.binary_dilation(labels > 0, iterations=halo)
    if not keep.any():
        return np.full_like(values, values.mean())
    weight = ndi.gaussian_filter(keep.astype(np.float64), sigma)
    smooth = ndi.gaussian_filter(np.where(keep, values, 0.0), sigma) / np.maximum(weight, 1e-6)
    defined = weight > 1e-3
    if not defined.all():  # far from any background pixel: the nearest defined level
        idx = ndi.distance_transform_edt(~defined, return_distances=False, return_indices=True)
        smooth = smooth[tuple(idx)]
    residual = (values - smooth)[keep]
    fill = smooth + rng.choice(residual, size=values.shape)
    return np.where(keep, values, fill)


def moving(image: np.ndarray, labels: np.ndarray, frames: int = 10, speed_px: float = 3.0,
           seed: int = 0, turn_deg: float = 3.0) -> Pair:
    """A (T, H, W) time series in which each object moves about ``speed_px`` per frame.

    Each object keeps its label id, moves in its own random direction (bouncing off the
    field's edges, so it stays whole inside the field) and turns slowly, up to
    ``turn_deg`` degrees per frame, which changes its outline a little. Objects are pasted
    in label order onto the field with all objects removed; where two overlap the later
    one overwrites the earlier. Frame 0 has every object at its own place (objects cut by
    the field's edge are pushed inside).
    """
    image, labels = _check(image, labels)
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    rng = np.random.default_rng(seed)
    h, w = labels.shape
    background = _background(image, labels, rng)
    ids = np.unique(labels[labels > 0])
    centroids = ndi.center_of_mass(np.ones_like(labels), labels, ids)
    objects = []
    margin = 2  # the halo pasted with each object
    for k, (cr, cc) in zip(ids, centroids):
        rr, cc_ = np.nonzero(labels == k)
        at = np.array([round(cr), round(cc)])
        radius = int(np.ceil(np.sqrt(((rr - at[0]) ** 2 + (cc_ - at[1]) ** 2).max()))) + margin + 1
        if 2 * radius + 1 > min(h, w):
            raise ValueError(f"object {k} is too large to move inside a {h} x {w} field")
        objects.append((int(k), at, radius))
    pad = max(r for _, _, r in objects) if objects else 0
    padded_image = np.pad(image.astype(np.float64), pad, mode="reflect")
    padded_labels = np.pad(labels, pad)
    patches = []
    for k, at, radius in objects:
        sl = tuple(slice(a + pad - radius, a + pad + radius + 1) for a in at)
        mask = padded_labels[sl] == k
        alpha = np.maximum(mask, np.clip(ndi.gaussian_filter(mask.astype(np.float64), 1.0) * 2, 0, 1))
        angle = rng.uniform(0, 2 * np.pi)
        velocity = speed_px * np.array([np.sin(angle), np.cos(angle)])
        turn = rng.uniform(-turn_deg, turn_deg)
        patches.append((k, at.astype(np.float64), radius, padded_image[sl], mask, alpha, velocity, turn))

    out_image = np.empty((frames, h, w), dtype=image.dtype)
    out_labels = np.zeros((frames, h, w), dtype=labels.dtype)
    state = []
    for k, at, radius, _, _, _, velocity, _ in patches:
        lo, hi = np.array([radius, radius]), np.array([h - 1 - radius, w - 1 - radius])
        state.append([np.clip(at, lo, hi), velocity.copy(), lo, hi])
    for t in range(frames):
        frame = background.copy()
        lab = out_labels[t]
        for (k, _, radius, patch, mask, alpha, _, turn), st in zip(patches, state):
            if t:
                pos, vel, lo, hi = st
                pos += vel
                for ax in range(2):  # bounce off the field's edges
                    if pos[ax] < lo[ax]:
                        pos[ax], vel[ax] = 2 * lo[ax] - pos[ax], -vel[ax]
                    elif pos[ax] > hi[ax]:
                        pos[ax], vel[ax] = 2 * hi[ax] - pos[ax], -vel[ax]
                    pos[ax] = min(max(pos[ax], lo[ax]), hi[ax])
            angle = turn * t
            if angle:
                p = ndi.rotate(patch, angle, reshape=False, order=1, mode="nearest")
                m = ndi.rotate(mask.astype(np.uint8), angle, reshape=False, order=0) > 0
                a = np.clip(ndi.rotate(alpha, angle, reshape=False, order=1), 0, 1)
            else:
                p, m, a = patch, mask, alpha
            r0, c0 = (int(round(v)) - radius for v in st[0])
            sl = (slice(r0, r0 + 2 * radius + 1), slice(c0, c0 + 2 * radius + 1))
            frame[sl] = a * p + (1 - a) * frame[sl]
            lab[sl][m] = k
        out_image[t] = _cast(frame, image.dtype)
    return out_image, out_labels


def corrupted_labels(labels: np.ndarray, pixels: int = 3, seed: int = 0) -> np.ndarray:
    """``labels`` as a weaker method or a careless hand would draw them: each object, at
    random, shifted by up to ``pixels`` along each axis (not by zero), dilated or eroded by 1 to
    ``pixels`` pixels. An object eroded to nothing keeps its centre pixel. Objects may now
    overlap; the one with the higher id wins there, as when painting in id order.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"expected 2D integer labels, got {labels.dtype} {labels.shape}")
    rng = np.random.default_rng(seed)
    out = np.zeros_like(labels)
    h, w = labels.shape
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        # Work in a crop padded to hold the change; paste back what lies inside the plane.
        pad = 2 * pixels + 1
        r0, c0 = max(0, sl[0].start - pad), max(0, sl[1].start - pad)
        r1, c1 = min(h, sl[0].stop + pad), min(w, sl[1].stop + pad)
        mask = labels[r0:r1, c0:c1] == i
        kind, amount = rng.integers(3), int(rng.integers(1, pixels + 1))
        if kind == 0:
            dr, dc = 0, 0
            while dr == dc == 0:
                dr, dc = rng.integers(-pixels, pixels + 1, size=2)
            mask = shifted(mask, (int(dr), int(dc)))
        elif kind == 1:
            mask = ndi.binary_dilation(mask, iterations=amount)
        else:
            eroded = ndi.binary_erosion(mask, iterations=amount)
            if not eroded.any():
                eroded = np.zeros_like(mask)
                eroded[tuple(np.round(ndi.center_of_mass(mask)).astype(int))] = True
            mask = eroded
        out[r0:r1, c0:c1][mask] = i
    return out


def _native(image: np.ndarray, labels: np.ndarray) -> Pair:
    image, labels = _check(image, labels)
    return image.copy(), labels.copy()


#: The standard set of variants the quality claims are measured on, by name.
VARIANTS: dict[str, Callable[[np.ndarray, np.ndarray], Pair]] = {
    "native": _native,
    "2x": lambda image, labels: magnify(image, labels, 2),
    "3x": lambda image, labels: magnify(image, labels, 3),
    "2048": lambda image, labels: tile(image, labels, 2048),
    "low_photon": lambda image, labels: low_photon(image, labels, photons=15, seed=0),
    "inverted": inverted,
    "rgb": rgb_stain,
}


def standard_variants(image: np.ndarray, labels: np.ndarray,
                      names: Iterable[str] | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, labels) for each variant of :data:`VARIANTS` (or those ``names``), made one at a time."""
    for name in (VARIANTS if names is None else names):
        if name not in VARIANTS:
            raise KeyError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        var_image, var_labels = VARIANTS[name](image, labels)
        yield name, var_image, var_labels

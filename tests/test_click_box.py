"""Click -> box for box-only models, on synthetic and real nuclei."""

from __future__ import annotations

import numpy as np
from skimage.measure import regionprops

from napari_sam.prompting.click_box import box_from_click
from napari_sam._sample_data import synthetic_nuclei


def box_iou(a, b) -> float:
    if a is None:
        return 0.0  # a click inside an object found nothing
    r0, c0 = max(a[0], b[0]), max(a[1], b[1])
    r1, c1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, r1 - r0 + 1) * max(0.0, c1 - c0 + 1)
    area = lambda x: (x[2] - x[0] + 1) * (x[3] - x[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def clicked_boxes(image, labels):
    for r in regionprops(labels):
        inside = r.coords[np.argmin(((r.coords - np.array(r.centroid)) ** 2).sum(1))]
        gt = (r.bbox[0], r.bbox[1], r.bbox[2] - 1, r.bbox[3] - 1)
        yield box_from_click(image, tuple(inside)), gt


def test_click_boxes_fit_separate_synthetic_nuclei():
    image, labels = synthetic_nuclei((256, 256), n=30, seed=3)
    ious = [box_iou(b, gt) for b, gt in clicked_boxes(image, labels)]
    assert np.median(ious) > 0.75 and np.mean(np.array(ious) > 0.5) > 0.9


def test_click_boxes_on_real_touching_nuclei(nuclei2d):
    image, labels = nuclei2d
    ious = np.array([box_iou(b, gt) for b, gt in clicked_boxes(image, labels)])
    assert np.median(ious) > 0.5 and np.mean(ious > 0.3) > 0.75


def test_flat_planes_give_no_box_and_boxes_stay_inside():
    image, labels = synthetic_nuclei((128, 160), n=6, seed=4)
    assert box_from_click(np.zeros((64, 64)), (10, 10)) is None  # a flat plane holds no object
    inside = [tuple(p) for p in np.argwhere(labels > 0)[::400]]
    for point in [(0, 0), (127, 159), (-5, 300), *inside]:
        box = box_from_click(image, point)
        assert box is not None or point not in inside
        if box is not None:
            r0, c0, r1, c1 = box
            assert 0 <= r0 <= r1 <= 127 and 0 <= c0 <= c1 <= 159


def test_dark_objects_on_bright_background_and_rgb():
    image, labels = synthetic_nuclei((128, 128), n=8, seed=5)
    dark = image.max() - image  # brightfield-like
    rgb = np.repeat(image[..., None], 3, axis=-1)
    for img in (dark, rgb):
        ious = [box_iou(b, gt) for b, gt in clicked_boxes(img, labels)]
        assert np.median(ious) > 0.7


def test_clicks_on_background_give_no_box_on_real_and_inverted_nuclei(nuclei2d):
    from scipy import ndimage as ndi

    image, labels = nuclei2d
    far = np.argwhere(ndi.distance_transform_edt(labels == 0) > 15)  # background, away from nuclei
    clicks = far[np.random.default_rng(0).choice(len(far), 40)]
    for img in (image, image.max() - image):  # fluorescence, and dark nuclei on bright
        assert all(box_from_click(img, tuple(p)) is None for p in clicks)
        found = [box_from_click(img, tuple(r.coords[len(r.coords) // 2])) for r in regionprops(labels)]
        assert np.mean([b is not None for b in found]) >= 0.97


def test_click_boxes_hold_at_low_photon_counts(nuclei2d):
    """At 15 photons per nucleus pixel the smoothing follows the noise: mean box IoU on
    every nucleus 0.74-0.76 over three noise draws (0.70-0.71 with a fixed 1 px sigma)."""
    from napari_sam.prompting.object_size import estimate_diameter
    from napari_sam.prompting.service import click_box
    from napari_sam.variants import low_photon

    image, labels = nuclei2d
    for seed in (0, 1):
        noisy, _ = low_photon(image, labels, photons=15, seed=seed)
        diameter = estimate_diameter(noisy)
        ious = []
        for r in regionprops(labels):
            inside = r.coords[np.argmin(((r.coords - np.array(r.centroid)) ** 2).sum(1))]
            gt = (r.bbox[0], r.bbox[1], r.bbox[2] - 1, r.bbox[3] - 1)
            ious.append(box_iou(click_box(noisy, tuple(map(float, inside)), diameter), gt))
        assert np.mean(ious) > 0.72, (seed, np.mean(ious))

"""Quality through the widget, as a user prompts: boxes dragged and clicks on real nuclei
and on the variants a microscope produces (2x and 3x magnification, a 2048 px field, few
photons, dark on bright, an RGB stain), all in one viewer, each opened as a new image.

Measured on 20 objects per variant (benchmarks/bench_prompts.py), the widget's boxes reach
a mean IoU of 0.81-0.87 and its clicks 0.78-0.87; on the 6 objects here the boxes measure
0.79-0.87 and the clicks 0.77-0.88, and the bounds sit a little below. The same box gives
the same mask through the widget and through Predictor.segment.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_sam.interactive.commit import MIN_SCORE
from napari_sam.variants import standard_variants

from .conftest import TIMEOUT_MS, click, drag, idle, iou, press, wait_candidates

OBJECTS = 6
BACKGROUND = 3
BOX_MIN = {"native": 0.82}  # mean IoU of the dragged boxes; other variants BOX_MIN_VARIANT
BOX_MIN_VARIANT = 0.77
CLICK_MIN = 0.74  # mean IoU of the clicks, on every variant


def objects(labels: np.ndarray, n: int, seed: int = 0) -> list[tuple[int, np.ndarray, tuple[float, float]]]:
    """(id, inclusive bbox, pixel nearest the centroid) of ``n`` objects off the border."""
    h, w = labels.shape
    found = [(k + 1, sl) for k, sl in enumerate(ndi.find_objects(labels)) if sl is not None
             and sl[0].start > 0 and sl[1].start > 0 and sl[0].stop < h and sl[1].stop < w]
    pick = np.random.default_rng(seed).choice(len(found), n, replace=False)
    out = []
    for k, sl in (found[i] for i in sorted(pick)):
        rr, cc = np.nonzero(labels[sl] == k)
        i = int(np.argmin((rr - rr.mean()) ** 2 + (cc - cc.mean()) ** 2))
        bbox = np.array([sl[0].start, sl[1].start, sl[0].stop - 1, sl[1].stop - 1], float)
        out.append((k, bbox, (float(rr[i] + sl[0].start), float(cc[i] + sl[1].start))))
    return out


def background(labels: np.ndarray, n: int, distance: float) -> np.ndarray:
    far = np.argwhere(ndi.distance_transform_edt(labels == 0) > distance)
    return far[np.random.default_rng(1).choice(len(far), n, replace=False)].astype(float)


def test_boxes_and_clicks_hold_on_every_variant(sam, qtbot, lite_predictor, nuclei2d):
    image, labels = nuclei2d
    viewer, widget = sam(image)
    native_area = np.median(np.bincount(labels.ravel())[1:])
    report = []
    for name, var_image, var_labels in standard_variants(image, labels):
        if name != "native":
            viewer.add_image(var_image, name=name, rgb=var_image.ndim == 3)  # the widget follows
        qtbot.waitUntil(lambda: widget.view is not None and widget.view.layer.name == ("image" if name == "native"
                                                                                      else name), timeout=TIMEOUT_MS)
        boxes, points = widget.prompts.boxes, widget.prompts.points
        picked = objects(var_labels, OBJECTS)

        widget.ui.box_mode.click()
        box_ious, same = [], []
        for k, bbox, _ in picked:
            drag(boxes, bbox[:2] - 1, bbox[2:] + 1)
            wait_candidates(qtbot, widget)
            box_ious.append(iou(widget.candidate_view.mask, var_labels == k))
            api = lite_predictor.segment(var_image, box=widget.prompts.for_plane(widget.view, ()).box)
            same.append(np.array_equal(api.masks, widget.candidate_view.candidates.masks))
            press(viewer, "X")

        widget.ui.point_mode.click()
        click_ious, neighbours = [], 0
        for k, _, at in picked:
            click(points, at)
            wait_candidates(qtbot, widget)
            mask = widget.candidate_view.mask
            click_ious.append(iou(mask, var_labels == k))
            others = np.unique(var_labels[mask])
            neighbours += any(iou(mask, var_labels == j) > 0.5 for j in others if j not in (0, k))
            press(viewer, "X")

        scale = np.sqrt(np.median(np.bincount(var_labels.ravel())[1:]) / native_area)
        offered = 0
        for at in background(var_labels, BACKGROUND, 15 * scale):
            click(points, at)
            qtbot.wait(50)
            idle(qtbot, widget)
            candidates = widget.candidate_view.candidates
            offered += candidates is not None and bool(candidates.masks.any()) and candidates.scores.max() >= MIN_SCORE
            press(viewer, "X")

        report.append(f"{name}: boxes {np.mean(box_ious):.2f} clicks {np.mean(click_ious):.2f} "
                      f"neighbours {neighbours} background offers {offered}")
        print(report[-1])
        assert all(same), report[-1]  # the widget and the API give the same mask for the same box
        assert np.mean(box_ious) >= BOX_MIN.get(name, BOX_MIN_VARIANT), report[-1]
        assert np.mean(click_ious) >= CLICK_MIN, report[-1]
        assert neighbours <= 1 and offered == 0, report[-1]
        # Only the few-photon field is shown to the model denoised, and the widget says so.
        assert ("denoised" in widget.ui.object_size.suffix()) == (name == "low_photon"), name
    idle(qtbot, widget)

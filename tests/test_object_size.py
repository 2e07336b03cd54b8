"""The object-size estimate that sets the zoom: right on the microscope variants of a field."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import regionprops

from napari_sam.prompting.object_size import default_diameter, estimate_diameter, objects_are_bright
from napari_sam.variants import standard_variants


def test_the_estimate_follows_the_objects_on_every_variant(nuclei2d):
    image, labels = nuclei2d
    for name, var_image, var_labels in standard_variants(image, labels):
        truth = np.median([2 * np.sqrt(r.area / np.pi) for r in regionprops(var_labels)])
        got = estimate_diameter(var_image)
        assert abs(got - truth) < 0.15 * truth, (name, got, truth)


def test_the_objects_polarity_is_told_on_every_variant(nuclei2d):
    """Fluorescent nuclei are bright; inverted and stained (RGB) ones are dark on bright."""
    image, labels = nuclei2d
    for name, var_image, _ in standard_variants(image, labels):
        assert objects_are_bright(var_image) == (name not in ("inverted", "rgb")), name
    assert objects_are_bright(np.zeros((8, 8)))  # nothing to tell: the usual case


@pytest.mark.parametrize("plane", [np.zeros((64, 64)), np.full((64, 64), np.nan), np.ones((64, 64, 3))])
def test_nothing_to_measure_gives_the_default(plane):
    assert estimate_diameter(plane) == default_diameter((64, 64))

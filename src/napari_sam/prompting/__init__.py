"""The prompt service: a plane's prompts answered as :class:`~napari_sam.values.Candidates`
from zoomed windows on a grid of levels (:mod:`.service`, :mod:`.windows`), at a zoom set by
the objects' size (:mod:`.object_size`), with a click turned into a box for box-only models
(:mod:`.click_box`). The widget, the API, propagation and tracking all ask it."""

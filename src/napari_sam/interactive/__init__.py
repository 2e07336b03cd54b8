"""The interactive loop without Qt or napari widgets: plane geometry of an image layer, the
click -> box policy, prompts of a plane, committing a mask as one undoable step, and the
background jobs (propagation, segment everything) the widget runs on workers.

The napari layers these functions take are used through their data and methods only, so
they run in tests without a display; :mod:`napari_sam._qt` wires them to the dock widget.
"""

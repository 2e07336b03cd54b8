"""Embeddings of planes and their zoomed tiles, kept: the engine's queue, prefetch and
cancellation on a worker (:mod:`.engine`), and zarr stores on disk (:mod:`.store`)."""

"""The model layer: the SAM network written from the architecture (:mod:`.sam` and its
parts), the one table of architectures (:mod:`.architectures`), the registry of released
models (:mod:`.registry`), verified weights (:mod:`.weights`) and :func:`~.loading.load_model`.

This package's ``__init__`` imports nothing, so the registry and the architecture table
(which the command line reads before it needs torch) stay quick to import.
"""

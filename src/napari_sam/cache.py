"""An in-memory LRU of embeddings within a byte budget, shared by the engine and the zoom."""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .values import Embedding

Key = tuple[Hashable, ...]

# 1 GiB: ~500 planes of SAM or LiteMedSAM features in fp16, ~128 of SAM 2 (with its high-res maps)
DEFAULT_CACHE_BYTES = 1 << 30


class EmbeddingCache:
    """Thread-safe LRU of embeddings within a byte budget.

    Features (and SAM 2's high-resolution maps) are stored as float16 on the CPU (half the
    memory, no GPU memory held) and handed back as float32 on the device asked for.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Key, Embedding] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored (float16) features and high-resolution maps."""
        with self._lock:
            return self._bytes

    def get(self, key: Key, device: torch.device | str = "cpu") -> Embedding | None:
        """The embedding stored under ``key`` as float32 on ``device``, or None."""
        with self._lock:
            stored = self._items.get(key)
            if stored is None:
                self.misses += 1
                return None
            self.hits += 1
            self._items.move_to_end(key)

        def back(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=torch.float32)

        high_res = None if stored.high_res is None else tuple(map(back, stored.high_res))
        return dataclasses.replace(stored, features=back(stored.features), high_res=high_res, origin=stored.features)

    def put(self, key: Key, embedding: Embedding) -> None:
        """Store ``embedding`` under ``key``, evicting the least recently used as needed.

        An embedding larger than the whole budget is not stored.
        """
        high_res = None if embedding.high_res is None else tuple(map(_half, embedding.high_res))
        stored = dataclasses.replace(embedding, features=_half(embedding.features), high_res=high_res, origin=None)
        size = stored.nbytes
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if size > self.max_bytes:
                return
            while self._items and self._bytes + size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes
            self._items[key] = stored
            self._bytes += size

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def _half(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(device="cpu", dtype=torch.float16).contiguous()


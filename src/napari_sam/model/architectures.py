"""The one table of SAM-family architectures: what each one is, per fact, in one place.

Everything that depends on the architecture reads :data:`TABLE`: the registry (input size,
normalisation, default prompt abilities), checkpoint loading (how to recognise a state
dict, which keys to drop), the model builder (which encoder family) and the CLI's choices.
Adding an architecture means one entry here plus its encoder configuration in
:mod:`napari_sam.model`. Nothing here imports torch, so the registry and CLI stay quick.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Normalisation = Literal["sam", "minmax"]
PromptKind = Literal["points", "boxes", "masks"]
EncoderFamily = Literal["vitdet", "tinyvit", "hiera"]
Fit = Literal["pad", "stretch"]

ALL_PROMPTS: tuple[PromptKind, ...] = ("points", "boxes", "masks")


@dataclass(frozen=True)
class Signature:
    """How a checkpoint shows its architecture: ``key``'s shape has ``size`` at ``dim``."""

    key: str
    dim: int
    size: int

    def matches(self, state: Mapping[str, Any]) -> bool:
        tensor = state.get(self.key)
        return tensor is not None and len(tensor.shape) > abs(self.dim) and tensor.shape[self.dim] == self.size


@dataclass(frozen=True)
class Architecture:
    """One SAM-family network.

    ``img_size`` is the side of the square encoder input. ``normalisation`` is how pixels
    are scaled before it: "sam" (ImageNet mean/std on 0-255) or "minmax" (to [0, 1]).
    ``fit`` is how a plane becomes that square: "pad" (longest side resized to it, the
    rest padded, as SAM 1) or "stretch" (both sides resized to it, as SAM 2).
    ``prompts`` are the prompt kinds its released weights answer well; a registry entry may
    narrow or widen them. ``unused_keys`` are state-dict prefixes that released checkpoints
    carry but inference never uses.
    """

    name: str
    encoder: EncoderFamily
    img_size: int
    normalisation: Normalisation
    signature: Signature
    prompts: tuple[PromptKind, ...] = ALL_PROMPTS
    unused_keys: tuple[str, ...] = ()
    fit: Fit = "pad"

    @property
    def box_only(self) -> bool:
        return "points" not in self.prompts

    @property
    def tracks_with_memory(self) -> bool:
        """SAM 2: carries objects through a stack with its memory bank."""
        return self.encoder == "hiera"


_TINYVIT_STEM = "image_encoder.patch_embed.seq.0.c.weight"  # 1x1 at 256 px, 3x3 at 1024 px
_VITDET_QKV = "image_encoder.blocks.0.attn.qkv.weight"  # (3 * width, width)
_TINYVIT_HEAD = ("image_encoder.head.", "image_encoder.norm_head.")  # the classifier of ImageNet pretraining
# Hiera: T and S share a width, so a block's width tells them apart (the 12th block is in
# T's last stage, S's third; the 16th exists only from S up); B+ and L differ in width.
_HIERA_BLOCK = "image_encoder.trunk.blocks.{}.norm1.weight"
_HIERA_WIDTH = "image_encoder.trunk.pos_embed"  # (1, width, 7, 7)

TABLE: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("vit_b", "vitdet", 1024, "sam", Signature(_VITDET_QKV, 1, 768)),
        Architecture("vit_l", "vitdet", 1024, "sam", Signature(_VITDET_QKV, 1, 1024)),
        Architecture("vit_h", "vitdet", 1024, "sam", Signature(_VITDET_QKV, 1, 1280)),
        Architecture("vit_t", "tinyvit", 1024, "sam", Signature(_TINYVIT_STEM, -1, 3),
                     unused_keys=_TINYVIT_HEAD),
        Architecture("lite_medsam", "tinyvit", 256, "minmax", Signature(_TINYVIT_STEM, -1, 1),
                     prompts=("boxes", "masks"), unused_keys=_TINYVIT_HEAD),
        Architecture("sam2.1_hiera_t", "hiera", 1024, "sam", Signature(_HIERA_BLOCK.format(11), 0, 768), fit="stretch"),
        Architecture("sam2.1_hiera_s", "hiera", 1024, "sam", Signature(_HIERA_BLOCK.format(15), 0, 768), fit="stretch"),
        Architecture("sam2.1_hiera_b+", "hiera", 1024, "sam", Signature(_HIERA_WIDTH, 1, 112), fit="stretch"),
        Architecture("sam2.1_hiera_l", "hiera", 1024, "sam", Signature(_HIERA_WIDTH, 1, 144), fit="stretch"),
    )
}

ARCHITECTURES: tuple[str, ...] = tuple(TABLE)
Arch = Literal["vit_b", "vit_l", "vit_h", "vit_t", "lite_medsam",
               "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"]


def architecture(name: str) -> Architecture:
    """The table entry for ``name``; the error lists the known architectures."""
    try:
        return TABLE[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; expected one of {', '.join(ARCHITECTURES)}") from None


def recognise(state: Mapping[str, Any]) -> str | None:
    """The architecture whose signature ``state`` (a state dict) carries, or None."""
    return next((a.name for a in TABLE.values() if a.signature.matches(state)), None)

"""The assembled SAM network: an image encoder, the prompt encoder and the mask decoder."""

from __future__ import annotations

from torch import nn

from .architectures import architecture
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .vit import ViTDetEncoder

EMBED_DIM = 256
EMBED_GRID = 64


def build_image_encoder(arch: str) -> nn.Module:
    """The image encoder of an architecture, of the family the architecture table names."""
    family = architecture(arch).encoder
    if family == "vitdet":
        return ViTDetEncoder(arch)
    from .tiny_vit import TinyViTEncoder

    return TinyViTEncoder(arch)


class Sam(nn.Module):
    """SAM with official state-dict layout (``image_encoder.*``, ``prompt_encoder.*``,
    ``mask_decoder.*``). Pre- and post-processing live in :mod:`napari_sam.predictor`."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        self.arch = arch
        self.image_encoder = build_image_encoder(arch)
        self.prompt_encoder = PromptEncoder(EMBED_DIM, EMBED_GRID, self.image_encoder.img_size)
        self.mask_decoder = MaskDecoder(EMBED_DIM)

    @property
    def img_size(self) -> int:
        """Side of the square model input (1024 for SAM/MobileSAM, 256 for LiteMedSAM)."""
        return self.image_encoder.img_size

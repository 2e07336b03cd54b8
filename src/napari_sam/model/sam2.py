"""SAM 2.1 assembled: the Hiera image encoder, SAM's prompt encoder, the SAM 2 mask decoder,
and the memory parts that carry an object from frame to frame (memory encoder, memory
attention, object pointers).

State-dict layout is the official one (``image_encoder.*``, ``sam_prompt_encoder.*``,
``sam_mask_decoder.*``, ``memory_attention.*``, ``memory_encoder.*`` and a few top-level
parameters). The frame-to-frame bookkeeping (which memories to attend to) lives in
:mod:`napari_sam.segmentation.memory_propagation`; this module computes one step at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from .common import StackedLinear
from .hiera import HIERA_CONFIGS
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .prompt_encoder import PromptEncoder
from .sam2_decoder import Sam2MaskDecoder
from .sam2_image_encoder import Sam2ImageEncoder
from .sine_positions import sine_positions

EMBED_DIM = 256
MEMORY_DIM = 64
GRID = 64
NO_OBJECT = -1024.0  # the mask logit written where the object score says "absent"
MEMORY_FRAMES = 7  # memory slots: the prompted frames' plus the 6 frames before this one
MAX_POINTERS = 16  # object pointers attended to, at most (prompted frames plus recent ones)

# The official configurations by architecture name (see model/architectures.py).
ENCODERS = {"sam2.1_hiera_t": "hiera_t", "sam2.1_hiera_s": "hiera_s",
            "sam2.1_hiera_b+": "hiera_b+", "sam2.1_hiera_l": "hiera_l"}


@dataclass(frozen=True)
class FrameFeatures:
    """What the image encoder gives for one frame: the 64x64 embedding before any memory,
    (1, 256, 64, 64), and the decoder's two high-resolution maps, (1, 32, 256, 256) and
    (1, 64, 128, 128)."""

    features: torch.Tensor
    high_res: tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class HeadOutput:
    """The decoder's answer on one frame for B prompts.

    ``masks`` (B, K, 256, 256) low-res logits, set to :data:`NO_OBJECT` where the object
    score says the object is absent; ``iou`` (B, K); ``best`` (B, 1, 256, 256) the mask
    of highest predicted IoU; ``pointer`` (B, 256) the object pointer for the memory;
    ``object_score`` (B, 1) logits, > 0 where the object is present.
    """

    masks: torch.Tensor
    iou: torch.Tensor
    best: torch.Tensor
    pointer: torch.Tensor
    object_score: torch.Tensor


def time_code(offsets: torch.Tensor, dim: int) -> torch.Tensor:
    """1D sine code of (relative) times, (N,) -> (N, dim): sines then cosines."""
    freq = 10000.0 ** (2 * (torch.arange(dim // 2, dtype=torch.float32, device=offsets.device) // 2) / (dim // 2))
    angles = offsets.float()[:, None] / freq
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Sam2(nn.Module):
    """SAM 2.1 with the official state-dict layout; ``arch`` is one of :data:`ENCODERS`."""

    img_size = 1024

    def __init__(self, arch: str) -> None:
        super().__init__()
        if arch not in ENCODERS:
            raise ValueError(f"unknown SAM 2.1 architecture {arch!r}; expected one of {', '.join(ENCODERS)}")
        self.arch = arch
        self.image_encoder = Sam2ImageEncoder(HIERA_CONFIGS[ENCODERS[arch]])
        self.sam_prompt_encoder = PromptEncoder(EMBED_DIM, GRID, self.img_size)
        self.sam_mask_decoder = Sam2MaskDecoder(EMBED_DIM)
        self.memory_attention = MemoryAttention()
        self.memory_encoder = MemoryEncoder()
        # Learnt codes: of a memory slot's age, of "no memory" on a prompted frame, of
        # "object absent" for pointers and memories.
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(MEMORY_FRAMES, 1, 1, MEMORY_DIM))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, EMBED_DIM))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, MEMORY_DIM))
        self.obj_ptr_proj = StackedLinear(EMBED_DIM, EMBED_DIM, EMBED_DIM, 3)
        self.obj_ptr_tpos_proj = nn.Linear(EMBED_DIM, MEMORY_DIM)
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)  # training-time mask prompts

    @property
    def prompt_encoder(self) -> PromptEncoder:
        return self.sam_prompt_encoder

    @property
    def mask_decoder(self) -> Sam2MaskDecoder:
        return self.sam_mask_decoder

    # ------------------------------------------------------------------ one image

    def encode(self, x: torch.Tensor) -> FrameFeatures:
        """Normalised input (1, 3, 1024, 1024) -> the frame's features, float32 (the
        encoder itself may run in bfloat16)."""
        fpn, _ = self.image_encoder(x, with_positions=False)
        d = self.sam_mask_decoder
        dtype = d.conv_s0.weight.dtype
        return FrameFeatures(fpn[-1].to(dtype), (d.conv_s0(fpn[0].to(dtype)), d.conv_s1(fpn[1].to(dtype))))

    def positions(self, device: torch.device) -> torch.Tensor:
        """The position code of the 64x64 embedding grid, (1, 256, 64, 64)."""
        return sine_positions(GRID, GRID, EMBED_DIM, device)[None]

    def without_memory(self, features: torch.Tensor) -> torch.Tensor:
        """The decoder's image embedding on a frame with no memory (a single image or the
        first prompted frame): the features plus the learnt "no memory" vector."""
        return features + self.no_mem_embed.view(1, -1, 1, 1)

    def prompt_tokens(self, points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None,
                      mask_input: torch.Tensor | None, batch: int, device: torch.device
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse and dense prompt embeddings as SAM 2 makes them.

        ``points`` (xy (B, N, 2), labels (B, N)) and ``boxes`` (B, 4) as x0, y0, x1, y1 are
        in model-input pixels; a box goes in as two corner points (labels 2 and 3) before
        the clicks, and without any prompt a single padding point stands in.
        """
        xys, labels = [], []
        if boxes is not None:
            xys.append(boxes.reshape(-1, 2, 2))
            labels.append(torch.tensor([[2, 3]], device=device).expand(boxes.shape[0], 2))
        if points is not None:
            xys.append(points[0])
            labels.append(points[1].long())
        if not xys:
            xys.append(torch.zeros(batch, 1, 2, device=device))
            labels.append(-torch.ones(batch, 1, dtype=torch.long, device=device))
        return self.sam_prompt_encoder((torch.cat(xys, 1), torch.cat(labels, 1)), None, mask_input)

    def heads(self, embedding: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor],
              points: tuple[torch.Tensor, torch.Tensor] | None = None, boxes: torch.Tensor | None = None,
              mask_input: torch.Tensor | None = None, multimask: bool = True) -> HeadOutput:
        """Decode prompts against an image embedding (1 or B, 256, 64, 64), with or without memory."""
        batch = max(t.shape[0] for t in (embedding, *(x for x in (boxes, mask_input) if x is not None),
                                         *(() if points is None else (points[0],))))
        sparse, dense = self.prompt_tokens(points, boxes, mask_input, batch, embedding.device)
        out = self.sam_mask_decoder(embedding, self.sam_prompt_encoder.dense_pe(), sparse, dense,
                                    multimask=multimask, high_res=high_res)
        present = out.object_score > 0
        masks = torch.where(present[:, :, None, None], out.masks, torch.full_like(out.masks, NO_OBJECT))
        rows = torch.arange(masks.shape[0], device=masks.device)
        pick = out.iou.argmax(dim=1) if multimask else torch.zeros_like(rows)
        token = out.tokens[rows, pick] if out.tokens.shape[1] > 1 else out.tokens[:, 0]
        pointer = self.obj_ptr_proj(token)
        presence = present.float()
        pointer = presence * pointer + (1 - presence) * self.no_obj_ptr
        return HeadOutput(masks, out.iou, masks[rows, pick][:, None], pointer, out.object_score)

    def mask_as_output(self, features: torch.Tensor, high_res: tuple[torch.Tensor, torch.Tensor],
                       mask: torch.Tensor) -> HeadOutput:
        """Take a given 0/1 mask (B, 1, 1024, 1024) as a frame's answer: its logits are the
        mask scaled to [-10, 10], and its object pointer comes from decoding the mask
        (shrunk to the decoder's mask-prompt size) against the frame's plain features."""
        logits = mask * 20.0 - 10.0
        low = F.interpolate(logits, size=(mask.shape[-2] // 4, mask.shape[-1] // 4), mode="bilinear",
                            align_corners=False, antialias=True)
        pointer = self.heads(features, high_res, mask_input=self.mask_downsample(mask), multimask=False).pointer
        present = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()
        pointer = present * pointer + (1 - present) * self.no_obj_ptr
        return HeadOutput(low, mask.new_ones(mask.shape[0], 1), low, pointer, present * 20.0 - 10.0)

    # ------------------------------------------------------------------ memory

    def with_memory(self, features: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                    num_pointer_tokens: int) -> torch.Tensor:
        """Condition a frame's features (B, 256, 64, 64) on memory tokens (B, M, 64) whose
        last ``num_pointer_tokens`` are object pointers; returns (B, 256, 64, 64)."""
        b, c, h, w = features.shape
        current = features.flatten(2).transpose(1, 2)
        pos = self.positions(features.device).flatten(2).transpose(1, 2).expand(b, -1, -1)
        out = self.memory_attention(current, memory, pos, memory_pos, num_pointer_tokens)
        return out.transpose(1, 2).reshape(b, c, h, w)

    def encode_memory(self, features: torch.Tensor, mask_logits: torch.Tensor, object_score: torch.Tensor,
                      binarize: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """A frame's memory from its features (B, 256, 64, 64) and its chosen mask's logits
        (B, 1, 1024, 1024): memory features and their position code, each (B, 64, 64, 64).

        The mask goes in as probabilities (or, for a mask that answers the user's clicks,
        as 0/1) scaled to [-10, 10], as the memory encoder was trained; a frame where the
        object is absent gets the learnt "no object" vector added.
        """
        mask = (mask_logits > 0).float() if binarize else torch.sigmoid(mask_logits)
        memory, pos = self.memory_encoder(features, mask * 20.0 - 10.0, skip_mask_sigmoid=True)
        absent = (object_score <= 0).float()[:, :, None, None]
        return memory + absent * self.no_obj_embed_spatial.view(1, -1, 1, 1), pos

    def memory_tokens(self, memories: list[tuple[int, torch.Tensor, torch.Tensor]],
                      pointers: list[tuple[int, torch.Tensor]], max_offset: int
                      ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Flatten a frame's memory into attention tokens.

        ``memories``: (slot, features (B, 64, 64, 64), position code) with slot 0 for a
        prompted frame and k for the frame k steps back (1..6); ``pointers``: (signed
        frame offset, pointer (B, 256)). Pointer offsets are coded relative to
        ``max_offset``. Returns memory (B, M, 64), its position code, and the number of
        pointer tokens at the end (each pointer splits into four 64-wide tokens).
        """
        tokens, codes = [], []
        for slot, feats, pos in memories:
            tokens.append(feats.flatten(2).transpose(1, 2).float())
            code = pos.flatten(2).transpose(1, 2) + self.maskmem_tpos_enc[MEMORY_FRAMES - 1 - slot].view(1, 1, -1)
            codes.append(code)
        n_ptr = 0
        if pointers:
            offsets = torch.tensor([o for o, _ in pointers], device=self.no_obj_ptr.device)
            ptr = torch.stack([p for _, p in pointers], dim=1)  # (B, P, 256)
            b, p = ptr.shape[:2]
            split = EMBED_DIM // MEMORY_DIM
            code = self.obj_ptr_tpos_proj(time_code(offsets / max(max_offset, 1), EMBED_DIM))  # (P, 64)
            tokens.append(ptr.reshape(b, p * split, MEMORY_DIM))
            codes.append(code.repeat_interleave(split, dim=0)[None].expand(b, -1, -1))
            n_ptr = p * split
        return torch.cat(tokens, 1), torch.cat(codes, 1), n_ptr


def sam2_upscale(logits: torch.Tensor, size: tuple[int, int] | int) -> torch.Tensor:
    """Low-res logits (B, K, 256, 256) -> (B, K, *size), bilinear as SAM 2 does."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def fill_small_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Set background islands of at most ``max_area`` pixels inside each mask, (B, 1, H, W)
    logits, to a small positive logit (0.1), as SAM 2's video predictor does before it
    reports a frame's mask."""
    if max_area <= 0:
        return logits
    out = logits.clone()
    for i in range(logits.shape[0]):
        background = (logits[i, 0] <= 0).cpu().numpy()
        lab, n = ndimage.label(background, structure=np.ones((3, 3)))  # 8-connected
        if n == 0:
            continue
        areas = np.bincount(lab.ravel())
        small = (areas <= max_area) & (np.arange(n + 1) > 0)
        holes = torch.from_numpy(small[lab]).to(logits.device)
        out[i, 0] = torch.where(holes, torch.full_like(out[i, 0], 0.1), out[i, 0])
    return out


__all__ = ["ENCODERS", "FrameFeatures", "HeadOutput", "NO_OBJECT", "Sam2", "fill_small_holes", "sam2_upscale"]

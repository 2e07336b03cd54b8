"""The SAM network, written from the architecture; loads official checkpoints."""

from .checkpoint import CheckpointError, load_state_dict, read_checkpoint
from .sam import Sam, build_image_encoder

__all__ = ["CheckpointError", "Sam", "build_image_encoder", "load_state_dict", "read_checkpoint"]

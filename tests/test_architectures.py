"""The architecture table is the one source of each architecture's facts: every registry
entry resolves through it, and each entry agrees with the network the model code builds."""

from __future__ import annotations

import pytest
import torch

from napari_sam.model.architectures import ARCHITECTURES, TABLE, architecture, recognise
from napari_sam.model.loading import build
from napari_sam.model.sam import Sam
from napari_sam.model.registry import ModelSpec, list_models, register


def meta_model(arch: str) -> Sam:
    """The network without memory for its weights: shapes only."""
    with torch.device("meta"):
        return build(arch)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_table_agrees_with_the_network_it_builds(arch):
    entry, model = architecture(arch), meta_model(arch)
    # The encoder maps the table's input size onto SAM's 64x64 embedding grid.
    side = entry.img_size
    with torch.device("meta"):
        x = torch.empty(1, 3, side, side)
        embedding = model.encode(x).features if entry.tracks_with_memory else model.image_encoder(x)
    assert tuple(embedding.shape) == (1, 256, 64, 64)
    family = {"vitdet": "ViTDetEncoder", "tinyvit": "TinyViTEncoder", "hiera": "Sam2ImageEncoder"}[entry.encoder]
    assert type(model.image_encoder).__name__ == family
    assert type(model).__name__ == ("Sam2" if entry.tracks_with_memory else "Sam")
    # A checkpoint of this network is recognised as this architecture, and as no other.
    state = model.state_dict()
    assert recognise(state) == arch
    assert [a for a in TABLE.values() if a.signature.matches(state)] == [entry]
    assert entry.normalisation in ("sam", "minmax")
    assert set(entry.prompts) <= {"points", "boxes", "masks"} and "boxes" in entry.prompts


def test_the_bundled_checkpoint_is_recognised_from_its_signature():
    from napari_sam.model.checkpoint import read_checkpoint
    from napari_sam.model.registry import get_spec
    from napari_sam.model.weights import resolve_checkpoint

    assert recognise(read_checkpoint(resolve_checkpoint(get_spec("lite_medsam")))) == "lite_medsam"


def test_every_registry_entry_resolves_through_the_table():
    specs = list_models()
    assert len(specs) >= 5
    for spec in specs:
        entry = architecture(spec.arch)
        assert (spec.img_size, spec.normalisation, spec.unused_prefixes) == (
            entry.img_size, entry.normalisation, entry.unused_keys), spec.name
        assert spec.prompts, spec.name
    lite = next(s for s in specs if s.name == "lite_medsam")
    assert lite.box_only and lite.img_size == 256 and lite.normalisation == "minmax"


def test_a_spec_takes_its_prompt_abilities_from_the_architecture_unless_it_says():
    assert ModelSpec("a", "lite_medsam", "a", "a.pth").prompts == ("boxes", "masks")
    assert ModelSpec("b", "vit_b", "b", "b.pth").prompts == ("points", "boxes", "masks")
    assert not ModelSpec("c", "lite_medsam", "c", "c.pth", prompts=("points", "boxes")).box_only


def test_unknown_architectures_are_refused_with_the_known_ones_listed():
    with pytest.raises(ValueError, match="vit_b, vit_l, vit_h, vit_t, lite_medsam"):
        architecture("vit_x")
    with pytest.raises(ValueError, match="unknown architecture"):
        register(ModelSpec("x", "vit_x", "x", "x.pth"))  # type: ignore[arg-type]
    assert recognise({"unrelated.weight": torch.zeros(3)}) is None

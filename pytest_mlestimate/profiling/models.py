"""Building the model a scenario names: a torchvision detection builder without downloads, or a
custom ``package.module:factory``; optional weights from a local file."""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pytest_mlestimate.core.errors import ModelBuildError
from pytest_mlestimate.profiling.contract import MeasuredModel
from pytest_mlestimate.profiling.hf_vision import HuggingFaceDetector
from pytest_mlestimate.scenarios.architectures import (
    LIBRARY_EXTRAS,
    TENSOR_TASKS,
    TORCHVISION,
    TargetKind,
    library_model,
    vit_patch,
)
from pytest_mlestimate.scenarios.scenario import Scenario


def target_kind(scenario: Scenario) -> TargetKind:
    known = TORCHVISION.get(scenario.architecture)
    if known is not None:
        return known.targets
    kinds = {
        "instance": "masks",
        "classification": "labels",
        "video-classification": "labels",
        "semantic-segmentation": "pixels",
        "causal-lm": "tokens",
        "custom": "custom",
    }
    return kinds.get(scenario.task_type, "boxes")  # type: ignore[return-value]


def num_classes(scenario: Scenario) -> int:
    if scenario.num_classes is not None:
        return scenario.num_classes
    known = TORCHVISION.get(scenario.architecture)
    if known is not None:
        return known.default_num_classes
    return {"classification": 1000, "video-classification": 400, "semantic-segmentation": 21}.get(
        scenario.task_type, 91
    )


_MODEL_CLASSES = {
    "Faster R-CNN": ("faster_rcnn", "FasterRCNN"),
    "Mask R-CNN": ("mask_rcnn", "MaskRCNN"),
    "Keypoint R-CNN": ("keypoint_rcnn", "KeypointRCNN"),
    "RetinaNet": ("retinanet", "RetinaNet"),
    "FCOS": ("fcos", "FCOS"),
    "SSD": ("ssd", "SSD"),
    "SSDlite": ("ssd", "SSD"),
}


def _named_parameters(function: Any) -> set[str]:
    return {
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) and name != "self"
    }


def accepted_model_kwargs(architecture: str) -> set[str]:
    """What a torchvision builder really uses: its own parameters, its model class's and the transform's.

    Some builders swallow unknown keywords silently, so a misspelt ``min_sise`` would change nothing.
    """
    from torchvision.models import detection
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    module, name = _MODEL_CLASSES[TORCHVISION[architecture].family]
    model_class = getattr(importlib.import_module(f"torchvision.models.detection.{module}"), name)
    accepted = _named_parameters(getattr(detection, architecture)) | _named_parameters(model_class.__init__)
    accepted |= _named_parameters(GeneralizedRCNNTransform.__init__)
    return accepted - {"weights", "weights_backbone", "progress", "backbone", "self"}


def _tensor_model(scenario: Scenario, kwargs: dict[str, Any]) -> nn.Module:
    """A torchvision classifier, segmenter or video model without weights (its backbone's too). A ViT is built
    for the scenario's image size (its position embedding is fixed by it: the scenario checked the size suits
    it); DeepLabV3 and FCN with their auxiliary head, as their recipes train them."""
    import torchvision

    name = scenario.architecture
    kwargs.setdefault("num_classes", num_classes(scenario))
    if vit_patch(name):
        kwargs.setdefault("image_size", scenario.image_size[0])
    if scenario.task_type == "semantic-segmentation":
        kwargs.setdefault("weights_backbone", None)
        if not name.startswith("lraspp"):
            kwargs.setdefault("aux_loss", True)
    try:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelBuildError(f"{name}: model_kwargs rejected by the builder: {exc}") from None


def _library_model(scenario: Scenario, library: str, name: str, kwargs: dict[str, Any]) -> nn.Module:
    """A timm model (``pretrained=False``) or a Hugging Face transformer built from its configuration (the
    model type's defaults, ``model_kwargs`` overriding them): nothing is downloaded."""
    extra = LIBRARY_EXTRAS[library]
    try:
        if library == "timm":
            import timm

            if name not in timm.list_models():
                close = difflib.get_close_matches(name, timm.list_models(), n=1)
                hint = f"did you mean 'timm:{close[0]}'? " if close else ""
                raise ModelBuildError(
                    f"architecture 'timm:{name}': timm has no such model; {hint}see timm.list_models()"
                )
            kwargs.setdefault("num_classes", num_classes(scenario))
            return timm.create_model(name, pretrained=False, **kwargs)
        return _transformers_model(scenario, name, dict(kwargs))
    except ImportError as exc:
        if exc.name == "timm" or "timm" in str(exc):  # a transformers model on a timm backbone (DETR's)
            extra = "timm"
        raise ModelBuildError(
            f"architecture '{scenario.architecture}' needs {extra}: pip install 'pytest-mlestimate[{extra}]'"
        ) from None
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelBuildError(f"architecture '{scenario.architecture}': {type(exc).__name__}: {exc}") from None


def _transformers_model(scenario: Scenario, name: str, overrides: dict[str, Any]) -> nn.Module:
    """A Hugging Face model from its configuration: an image classifier, a causal language model, or a detector
    or universal segmenter in torchvision's detection contract (``hf_vision``), its backbone without weights. The
    hub is off: a configuration naming a backbone by its hub name is an error, not a download."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when transformers is first imported
    import transformers
    from transformers.models.auto import modeling_auto

    builds = {
        "classification": ("an image classifier", modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES),
        "causal-lm": ("a causal language model", modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
        "detection": ("an object detector", modeling_auto.MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES),
        "instance": ("a universal segmenter", modeling_auto.MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES),
    }
    what, types = builds[scenario.task_type]
    if name not in types:
        shown = ", ".join(sorted(types)[:20]) + (", ..." if len(types) > 20 else "")
        raise ModelBuildError(
            f"architecture 'hf:{name}': transformers builds no {what[what.index(' ') + 1 :]} of model type "
            f"'{name}', which task_type '{scenario.task_type}' measures; model types it builds as {what}: {shown}"
        )
    if scenario.task_type != "causal-lm":
        overrides.setdefault("num_labels", num_classes(scenario))
    if scenario.task_type in ("detection", "instance"):
        overrides["use_pretrained_backbone"] = False  # never a download, whatever model_kwargs say
        if isinstance(overrides.get("backbone_config"), dict):
            overrides["backbone_config"] = {**overrides["backbone_config"], "use_pretrained_backbone": False}
    config = transformers.AutoConfig.for_model(name, **overrides)
    if scenario.task_type == "causal-lm":
        return transformers.AutoModelForCausalLM.from_config(config)
    if scenario.task_type == "classification":
        return transformers.AutoModelForImageClassification.from_config(config)
    masks = scenario.task_type == "instance"
    auto = transformers.AutoModelForUniversalSegmentation if masks else transformers.AutoModelForObjectDetection
    return HuggingFaceDetector(auto.from_config(config), masks, scenario.architecture)


def build_model(scenario: Scenario) -> nn.Module | MeasuredModel:
    kwargs: dict[str, Any] = dict(scenario.model_kwargs)
    known = TORCHVISION.get(scenario.architecture)
    library = library_model(scenario.architecture)
    if library is not None:
        model = _library_model(scenario, *library, kwargs)
    elif known is not None and known.task_type in TENSOR_TASKS:
        model = _tensor_model(scenario, kwargs)
    elif known is not None:
        from torchvision.models import detection

        builder = getattr(detection, scenario.architecture)
        unknown = sorted(set(kwargs) - accepted_model_kwargs(scenario.architecture))
        if unknown:
            raise ModelBuildError(
                f"model_kwargs {', '.join(unknown)} not accepted by {scenario.architecture}; allowed: "
                f"{', '.join(sorted(accepted_model_kwargs(scenario.architecture)))}"
            )
        kwargs.setdefault("num_classes", num_classes(scenario))
        try:
            model = builder(weights=None, weights_backbone=None, **kwargs)
        except TypeError as exc:
            raise ModelBuildError(f"{scenario.architecture}: model_kwargs rejected by the builder: {exc}") from None
    else:
        module_name, _, attr = scenario.architecture.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelBuildError(f"cannot load custom factory '{scenario.architecture}': {exc}") from None
        if scenario.num_classes is not None:
            kwargs.setdefault("num_classes", scenario.num_classes)
        model = factory(**kwargs)
        if scenario.task_type == "custom" and not isinstance(model, MeasuredModel):
            raise ModelBuildError(
                f"custom factory '{scenario.architecture}' returned {type(model).__name__}; with task_type "
                "'custom' a factory returns a MeasuredModel (its module, make_batch and loss)"
            )
        if isinstance(model, MeasuredModel):
            if scenario.task_type != "custom":
                raise ModelBuildError(
                    f"custom factory '{scenario.architecture}' returned a MeasuredModel: set task_type 'custom' "
                    f"(got '{scenario.task_type}')"
                )
            if not isinstance(model.module, nn.Module):
                raise ModelBuildError(
                    f"custom factory '{scenario.architecture}' returned a MeasuredModel whose module is "
                    f"{type(model.module).__name__}, not an nn.Module"
                )
        elif not isinstance(model, nn.Module):
            raise ModelBuildError(
                f"custom factory '{scenario.architecture}' returned {type(model).__name__}, not an nn.Module"
            )
    if scenario.weights_path:
        load_weights(model.module if isinstance(model, MeasuredModel) else model, scenario.weights_path)
    return model


SAVE_STATE_DICT = "save the weights with torch.save(model.state_dict(), path)"


def load_weights(model: nn.Module, path: str) -> None:
    """Only a state dict (or a checkpoint holding one under ``model``) is read, and only with torch's
    ``weights_only`` loader: a weights file is never a reason to run code from a pickle."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ModelBuildError(f"weights_path '{path}': cannot be read: {exc.strerror or exc}") from None
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError: not a torch file of tensors
        pickled_objects = isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc)
        what = (
            "holds Python objects besides tensors (a whole pickled model?)"
            if pickled_objects
            else "is not a file of tensors torch can load"
        )
        raise ModelBuildError(
            f"weights_path '{path}' {what}; weights are read only as tensors (torch.load with weights_only=True), "
            f"so {SAVE_STATE_DICT}"
        ) from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = type(state).__name__ if not isinstance(state, dict) else "a dict whose values are not all tensors"
        raise ModelBuildError(f"weights_path '{path}' holds {found}, not a state dict; {SAVE_STATE_DICT}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelBuildError(f"weights_path '{path}' does not fit the built model: {first}") from None


@dataclass(frozen=True)
class DetectionLoad:
    """The detection load inference is measured at: ``per_image`` detections per image, or None where the
    weights decide."""

    per_image: int | None
    statement: str
    previous: list[tuple[nn.Module, dict[str, Any]]] = field(default_factory=list, repr=False, compare=False)

    def __str__(self) -> str:
        return self.statement

    def restore(self) -> None:
        """Put back the knobs as they were: a factory may hand out a model its caller goes on using."""
        for head, knobs in self.previous:
            for name, value in knobs.items():
                setattr(head, name, value)


_KNOBS = ("detections_per_img", "score_thresh", "nms_thresh", "topk_candidates")


def _detection_heads(model: nn.Module) -> list[nn.Module]:
    """Modules that post-process detections: torchvision's RoIHeads, RetinaNet, FCOS, SSD, or a custom
    module with the same knobs (a region proposal network has a score threshold, not detections_per_img)."""
    return [m for m in model.modules() if hasattr(m, "detections_per_img") and hasattr(m, "score_thresh")]


def apply_detection_load(model: nn.Module, scenario: Scenario) -> DetectionLoad:
    """Set the model's post-processing so that every image yields the scenario's stated number of detections.

    Post-processing cost (NMS, mask pasting, keypoints) follows the number of detections, which random
    weights set arbitrarily. A score threshold of 0 lets every candidate through and an NMS IoU threshold
    of 1 suppresses none (NMS still runs), so ``detections_per_img`` decides the count.
    """
    load = scenario.detection_load
    if scenario.task_type not in ("detection", "instance"):
        return DetectionLoad(None, f"a {scenario.task_type} model: no detections to post-process")
    if isinstance(model, HuggingFaceDetector):
        return DetectionLoad(
            model.queries,
            f"{model.queries or 'its'} predictions per image, one per query of the model (its image processor's "
            "post-processing, which keeps the likely ones, is not measured)",
        )
    if load == "weights":
        return DetectionLoad(None, "as the weights give on the synthetic images (detection_load 'weights')")
    heads = _detection_heads(model)
    if not heads:
        return DetectionLoad(
            None, f"as the weights give; {type(model).__name__} has no detections_per_img and score_thresh to set"
        )
    previous = [(head, {k: getattr(head, k) for k in _KNOBS if hasattr(head, k)}) for head in heads]
    for head in heads:
        if load != "max":
            head.detections_per_img = load
        head.score_thresh = 0.0
        if hasattr(head, "nms_thresh"):
            head.nms_thresh = 1.0
        if hasattr(head, "topk_candidates"):
            head.topk_candidates = max(int(head.topk_candidates), int(head.detections_per_img))
    per_image = max(int(head.detections_per_img) for head in heads)
    source = "the model's detections_per_img" if load == "max" else "detection_load"
    return DetectionLoad(
        per_image, f"{per_image} detections per image ({source}; score threshold 0, NMS IoU threshold 1)", previous
    )


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def effective_input_size(model: nn.Module, image: torch.Tensor) -> tuple[int, int] | None:
    """The size the model really computes on, after its own resize and padding (None if it has no
    torchvision-style ``transform``)."""
    transform = getattr(model, "transform", None)
    if transform is None:
        return None
    was_training = transform.training
    transform.eval()
    with torch.inference_mode():
        batched, _ = transform([image])
    transform.train(was_training)
    height, width = batched.tensors.shape[-2:]
    return int(height), int(width)

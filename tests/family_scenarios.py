"""Small scenarios of the families beyond detection, spelt once for the engine and plugin tests."""

from typing import Any

SMALL: dict[str, Any] = {
    "task_type": "classification", "architecture": "resnet18", "dataset_size": 640, "batch_size": 4,
    "image_size": [32, 32], "device": "cpu", "warmup_iterations": 1, "measure_iterations": 3, "num_classes": 10,
}  # fmt: skip

SEGMENT: dict[str, Any] = {
    **SMALL, "task_type": "semantic-segmentation", "architecture": "deeplabv3_mobilenet_v3_large",
    "batch_size": 2, "image_size": [32, 32], "num_classes": 5, "measure_iterations": 2,
}  # fmt: skip

VIDEO: dict[str, Any] = {
    **SMALL, "task_type": "video-classification", "architecture": "r3d_18", "batch_size": 2, "clip_length": 4,
    "image_size": [16, 16], "measure_iterations": 2,
}  # fmt: skip

COMMON: dict[str, Any] = {"dataset_size": 100, "batch_size": 2, "device": "cpu", "warmup_iterations": 1,
                          "measure_iterations": 2, "breakdown_depth": 0}  # fmt: skip

TIMM = {**COMMON, "task_type": "classification", "architecture": "timm:resnet10t", "image_size": [32, 32],
        "num_classes": 10}  # fmt: skip

TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
            "image_size": 32, "patch_size": 8}  # fmt: skip

HF_VISION = {**COMMON, "task_type": "classification", "architecture": "hf:vit", "image_size": [32, 32],
             "num_classes": 10, "model_kwargs": TINY_VIT}  # fmt: skip

TINY_GPT2 = {"n_embd": 32, "n_layer": 2, "n_head": 2, "vocab_size": 1000, "n_positions": 128}

HF_TEXT = {**COMMON, "task_type": "causal-lm", "architecture": "hf:gpt2", "sequence_length": 64,
           "model_kwargs": TINY_GPT2}  # fmt: skip

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

TINY_DETR = {"backbone": "resnet10t", "num_queries": 10, "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
             "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "encoder_attention_heads": 2,
             "decoder_attention_heads": 2}  # fmt: skip

HF_DETR = {**COMMON, "task_type": "detection", "architecture": "hf:detr", "image_size": [64, 80], "num_classes": 11,
           "model_kwargs": TINY_DETR}  # fmt: skip

TINY_MASK2FORMER = {
    "backbone_config": {"model_type": "swin", "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
                        "out_features": ["stage1", "stage2", "stage3", "stage4"]},
    "hidden_dim": 32, "feature_size": 32, "mask_feature_size": 32, "num_queries": 10, "encoder_layers": 1,
    "decoder_layers": 2, "encoder_feedforward_dim": 64, "dim_feedforward": 64, "num_attention_heads": 2,
    "train_num_points": 1024,
}  # fmt: skip

HF_MASK2FORMER = {**COMMON, "task_type": "instance", "architecture": "hf:mask2former", "image_size": [64, 64],
                  "num_classes": 11, "model_kwargs": TINY_MASK2FORMER}  # fmt: skip

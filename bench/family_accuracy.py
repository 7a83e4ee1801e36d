"""Accuracy of the estimate for the model families beyond detection, against plain training loops.

One configuration per family: a torchvision classifier, segmenter and video classifier, a timm model, a Hugging
Face image classifier and a Hugging Face causal language model, each small enough for a CPU. For each, the
estimate (``estimate()`` in a fresh process, no cache: Total Training Time and Peak RAM Memory) is held against
a plain training loop written here without the estimator, in another fresh process: the model built the same
way, the same optimizer recipe, the recipe's loss, every step of the dataset timed (the step's own wall time,
as a user's loop would see it), and the process's peak RSS. The two arms alternate, ``--repeats`` times; the
medians are compared.

    .venv/bin/python bench/family_accuracy.py [--repeats 2] [--only video] [--device cuda]

On a GPU (``--device cuda``) the loop synchronises before it reads its clock, and the peaks compared are the
allocator's: the estimate's peak allocated bytes (``details.gpu_memory.peak_allocated``) against the loop's
``max_memory_allocated``.

Bars (issue: any PyTorch model): Total Training Time within 10 % and Peak RAM within 5 % for each family.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

COMMON = {"breakdown_depth": 0}
CONFIGS: dict[str, dict[str, Any]] = {
    "classification resnet18": {
        "task_type": "classification", "architecture": "resnet18", "batch_size": 8, "image_size": [64, 64],
        "dataset_size": 320, "num_classes": 10,
    },
    "segmentation deeplabv3_mobilenet": {
        "task_type": "semantic-segmentation", "architecture": "deeplabv3_mobilenet_v3_large", "batch_size": 4,
        "image_size": [128, 128], "dataset_size": 120, "num_classes": 21,
    },
    "video r3d_18": {
        "task_type": "video-classification", "architecture": "r3d_18", "batch_size": 2, "image_size": [64, 64],
        "clip_length": 8, "dataset_size": 60, "num_classes": 10,
    },
    "timm resnet18": {
        "task_type": "classification", "architecture": "timm:resnet18", "batch_size": 8, "image_size": [64, 64],
        "dataset_size": 320, "num_classes": 10,
    },
    "hf vit": {
        "task_type": "classification", "architecture": "hf:vit", "batch_size": 8, "image_size": [64, 64],
        "dataset_size": 320, "num_classes": 10,
        "model_kwargs": {"image_size": 64, "patch_size": 8, "hidden_size": 192, "num_hidden_layers": 4,
                         "num_attention_heads": 3, "intermediate_size": 768},
    },
    "hf gpt2 causal-lm": {
        "task_type": "causal-lm", "architecture": "hf:gpt2", "batch_size": 4, "sequence_length": 128,
        "dataset_size": 160,
        "model_kwargs": {"n_embd": 256, "n_layer": 4, "n_head": 4, "vocab_size": 8000, "n_positions": 256},
    },
}  # fmt: skip


def estimated(name: str, device: str) -> dict[str, float]:
    from pytest_mlestimate.api import estimate

    found = estimate({**CONFIGS[name], **COMMON, "device": device}, cache=False).to_dict()
    on_gpu = device.startswith("cuda")
    peak = found["details"]["gpu_memory"]["peak_allocated"] if on_gpu else found["resource"]["Peak RAM Memory"]
    return {"seconds": found["training_time"]["Total Training Time"], "peak_rss": peak}


def plain_loop(name: str, device: str) -> dict[str, float]:
    """The family's training loop as its reference recipe writes it, without the estimator."""
    import torch
    from torch.nn import functional

    config = CONFIGS[name]
    task, architecture = config["task_type"], config["architecture"]
    batch, classes = config["batch_size"], config.get("num_classes", 10)
    height, width = config.get("image_size", [1, config.get("sequence_length", 128)])
    torch.manual_seed(0)
    kwargs = dict(config.get("model_kwargs", {}))
    if architecture.startswith("timm:"):
        import timm

        model = timm.create_model(architecture[5:], pretrained=False, num_classes=classes)
    elif architecture.startswith("hf:"):
        import transformers

        if task == "causal-lm":
            model = transformers.AutoModelForCausalLM.from_config(
                transformers.AutoConfig.for_model(architecture[3:], **kwargs)
            )
        else:
            model = transformers.AutoModelForImageClassification.from_config(
                transformers.AutoConfig.for_model(architecture[3:], num_labels=classes, **kwargs)
            )
    else:
        import torchvision

        extra = {"weights_backbone": None, "aux_loss": True} if task == "semantic-segmentation" else {}
        model = torchvision.models.get_model(architecture, weights=None, num_classes=classes, **extra)
    model.to(device).train()
    on_gpu = device.startswith("cuda")
    if architecture.startswith(("timm:", "hf:")):
        lr, decay = (1e-3, 0.05) if architecture.startswith("timm:") else (5e-5, 0.01)
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
    else:
        lr = {"classification": 0.1, "semantic-segmentation": 0.02, "video-classification": 0.01}[task]
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(1)

    def batch_of() -> tuple[torch.Tensor, torch.Tensor]:
        if task == "causal-lm":
            tokens = torch.randint(0, kwargs["vocab_size"], (batch, width), generator=generator)
            return tokens, tokens
        if task == "video-classification":
            clips = torch.rand(batch, 3, config["clip_length"], height, width, generator=generator)
            return clips, torch.randint(0, classes, (batch,), generator=generator)
        images = torch.rand(batch, 3, height, width, generator=generator)
        shape = (batch, height, width) if task == "semantic-segmentation" else (batch,)
        return images, torch.randint(0, classes, shape, generator=generator)

    def loss_of(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if task == "causal-lm":
            return model(input_ids=inputs, labels=targets).loss
        output = model(inputs)
        if task == "semantic-segmentation":
            return functional.cross_entropy(output["out"], targets) + 0.5 * functional.cross_entropy(
                output["aux"], targets
            )
        logits = getattr(output, "logits", output)
        return functional.cross_entropy(logits, targets)

    inputs, targets = (tensor.to(device) for tensor in batch_of())
    seconds = 0.0
    for _ in range(-(-config["dataset_size"] // batch)):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(inputs, targets)
        loss.backward()
        optimizer.step()
        float(loss)  # waits for the device, as a user's logging does
        seconds += time.perf_counter() - started
    if on_gpu:
        return {"seconds": seconds, "peak_rss": torch.cuda.max_memory_allocated(device)}
    return {"seconds": seconds, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def in_fresh_process(arm: str, name: str, device: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--arm", arm, "--config", name, "--device", device], capture_output=True,
        text=True, check=False, timeout=3600,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{arm} of {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", default="", help="configurations whose name contains this")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--arm", choices=["estimate", "loop"], help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        arm = estimated if args.arm == "estimate" else plain_loop
        print(json.dumps(arm(args.config, args.device)))
        return
    print("load average before:", os.getloadavg(), flush=True)
    results = {}
    memory = "peak allocated GPU memory" if args.device.startswith("cuda") else "peak RAM"
    for name in (n for n in CONFIGS if args.only in n):
        runs: dict[str, list[dict[str, float]]] = {"estimate": [], "loop": []}
        for repeat in range(args.repeats):
            for arm in ("estimate", "loop") if repeat % 2 == 0 else ("loop", "estimate"):
                runs[arm].append(in_fresh_process(arm, name, args.device))
                print(name, arm, runs[arm][-1], flush=True)
        median = {arm: {k: statistics.median(r[k] for r in found) for k in ("seconds", "peak_rss")}
                  for arm, found in runs.items()}  # fmt: skip
        results[name] = {
            "estimate s": [round(r["seconds"], 2) for r in runs["estimate"]],
            "loop s": [round(r["seconds"], 2) for r in runs["loop"]],
            "time error (bar: within 10 %)": f"{median['estimate']['seconds'] / median['loop']['seconds'] - 1:+.1%}",
            f"estimate {memory} MiB": round(median["estimate"]["peak_rss"] / 2**20),
            f"loop {memory} MiB": round(median["loop"]["peak_rss"] / 2**20),
            f"{memory} error (bar: within 5 % on the CPU)": (
                f"{median['estimate']['peak_rss'] / median['loop']['peak_rss'] - 1:+.1%}"
            ),
        }
    print(json.dumps(results, indent=2))
    print("load average after:", os.getloadavg())


if __name__ == "__main__":
    main()

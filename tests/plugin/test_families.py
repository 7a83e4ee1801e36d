"""Each family beyond detection through ``pytest --mlestimate`` with budgets: a segmenter, a video classifier, a
timm model, and Hugging Face's image classifier, language model, DETR detector and Mask2Former segmenter, the JSON
report valid against its schema and every documented key present."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from tests.documented_keys import RESOURCE_KEYS
from tests.family_scenarios import HF_DETR, HF_MASK2FORMER, HF_TEXT, HF_VISION, SEGMENT, TIMM, VIDEO
from tests.plugin.conftest import RunResult, by_name, scenario_file

SCHEMA = Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json"
FAMILIES = {"segmenter": SEGMENT, "video": VIDEO, "timm": TIMM, "hf-vision": HF_VISION, "hf-text": HF_TEXT,
            "hf-detr": HF_DETR, "hf-mask2former": HF_MASK2FORMER}  # fmt: skip


def test_every_family_runs_end_to_end_with_its_budgets(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    entries = [
        {"name": name, **{k: v for k, v in config.items() if k != "device"}, "device": "cpu", "breakdown_depth": 0,
         "budgets": {"peak_ram_memory": "1 KiB" if name == "video" else "20 GiB", "forward_pass": "30 s"}}
        for name, config in FAMILIES.items()
    ]  # fmt: skip
    pytester.makefile(".yaml", scenarios=scenario_file(*entries))
    result, report = run_scenarios("--mlestimate-no-cache")
    result.assert_outcomes(passed=6, failed=1)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    found = by_name(report)
    for name in FAMILIES:
        assert set(RESOURCE_KEYS) <= set(found[name]["resource"]), name
        assert found[name]["training_time"]["Total Training Time"] > 0, name
        assert found[name]["inference_time"]["1-Image Inference Time"] > 0, name
    assert found["hf-text"]["scenario"]["image_size"] == [1, 64]
    for name in ("hf-detr", "hf-mask2former"):  # one prediction per query, as stated, and no warning about it
        assert not [w for w in found[name]["warnings"] if "detection_load" in w], found[name]["warnings"]
        assert "10 predictions per image" in json.dumps(found[name]), name
    (broken,) = [c for c in found["video"]["budgets"] if c["passed"] is False]
    assert broken["metric"] == "peak_ram_memory"

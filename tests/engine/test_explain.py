"""Naming the modules behind a failed figure, from the per-module breakdown each run keeps."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_mlestimate.profiling.breakdown import Breakdown, split_memory
from pytest_mlestimate.verdicts.explain import Explanation, ModuleFigures, explain, reading
from pytest_mlestimate.verdicts.regression import Run

MiB = 2**20


def breakdown(
    head_activations: int = 10 * MiB,
    head_forward: float = 0.10,
    parameters: int = 4 * MiB,
    on_gpu: bool = False,
    forward_peak: int | None = None,
) -> dict[str, Any]:
    """``details.breakdown`` as the engine writes it: a backbone that stays put and a head that may grow."""
    return {
        "method": "module hooks",
        "depth": 1,
        "parts": [
            {
                "module": "backbone.body",
                "forward_s": 0.21,
                "backward_s": 0.40,
                "activations_bytes": 50 * MiB,
                "forward_peak_bytes": forward_peak,
                "inference_s": 0.08,
            },
            {
                "module": "roi_heads",
                "forward_s": head_forward,
                "backward_s": 2 * head_forward,
                "activations_bytes": head_activations,
                "forward_peak_bytes": forward_peak,
                "inference_s": head_forward / 2,
            },
            {
                "module": "rpn",
                "forward_s": 0.02,
                "backward_s": 0.03,
                "activations_bytes": 1 * MiB,
                "forward_peak_bytes": None,
                "inference_s": 0.01,
            },
        ],
        "training": {"steps": 3, "step_s": 1.0},
        "inference": {"calls": 3, "batch_s": 0.2, "parts_s": 0.15, "other_s": 0.05},
        "memory": memory_split(parameters, on_gpu),
    }


def memory_split(parameters: int, on_gpu: bool) -> dict[str, Any]:
    """The peak's split as the engine makes it (``split_memory``), of a 1000 MiB peak."""
    found = Breakdown()
    found._shares = {
        "parameters": parameters,
        "gradients": parameters,
        "optimizer_state": parameters,
        "activations": 61 * MiB,
    }
    split_memory(found, "the peak", 1000 * MiB, on_gpu=on_gpu)
    assert found.memory is not None
    return found.memory.model_dump()


def figures(**changes: Any) -> ModuleFigures:
    found = ModuleFigures.of_breakdown(breakdown(**changes))
    assert found is not None
    return found


BASELINE = [figures(head_forward=f) for f in (0.099, 0.10, 0.101)]


def test_memory_names_the_module_whose_activations_grew_first_then_the_whole_models_shares() -> None:
    wider = figures(head_activations=200 * MiB, parameters=8 * MiB)
    found = explain(["peak_ram_memory"], [wider], BASELINE)
    assert [(c.module, c.pseudo) for c in found.contributions] == [
        ("roi_heads", False),
        ("parameters", True),
        ("gradients", True),
        ("optimizer state", True),
    ]
    head = found.contributions[0]
    assert (head.baseline, head.now, head.growth) == (10 * MiB, 200 * MiB, 190 * MiB)
    assert head.share == pytest.approx(0.2)
    assert found.line("peak_ram_memory") == (
        "peak_ram_memory grew most in: roi_heads activations +190.00 MiB (10.00 MiB -> 200.00 MiB); the whole "
        "model's parameters +4.00 MiB (4.00 MiB -> 8.00 MiB), gradients +4.00 MiB (4.00 MiB -> 8.00 MiB), "
        "optimizer state +4.00 MiB (4.00 MiB -> 8.00 MiB)"
    )
    assert found.lines()[0] == "module by module (the median of the baseline's 3 runs against 1 run now):"


def test_gpu_memory_counts_the_larger_of_the_saved_tensors_and_the_forward_peak() -> None:
    before = [figures(on_gpu=True, forward_peak=0)]
    # the same saved tensors (backbone 50 MiB, head 10 MiB), each part's forward now peaking 80 MiB above its start:
    # the saved tensors are inside that peak, so the growth is 80 - 50 and 80 - 10, not 80
    after = [figures(on_gpu=True, forward_peak=80 * MiB)]
    (first, second, *_) = explain(["peak_gpu_memory"], after, before).contributions
    assert (first.module, first.growth, first.figure) == ("roi_heads", 70 * MiB, "activations or forward peak")
    assert (second.module, second.growth) == ("backbone.body", 30 * MiB)
    assert first.share == pytest.approx(0.08)  # of the allocator's peak the split is of: 80 of 1000 MiB


def test_times_rank_by_their_own_phase() -> None:
    slower = [figures(head_forward=0.5)]
    found = explain(["total_training_time", "backward_pass", "forward_pass", "inference_batch"], slower, BASELINE)
    firsts = {metric: found.of(metric)[0] for metric in found.metrics}
    assert {m: (c.module, c.figure) for m, c in firsts.items()} == {
        "total_training_time": ("roi_heads", "forward + backward"),
        "backward_pass": ("roi_heads", "backward"),
        "forward_pass": ("roi_heads", "forward"),
        "inference_batch": ("roi_heads", "inference"),
    }
    assert firsts["total_training_time"].growth == pytest.approx(1.2)  # 0.3 s -> 1.5 s
    assert all(not c.pseudo for c in found.contributions)  # no parameters for a timing


def test_an_inference_scenarios_forward_pass_is_its_inference() -> None:
    found = explain(["forward_pass"], [figures(head_forward=0.5)], BASELINE, training=False)
    assert found.contributions[0].figure == "inference"
    assert reading("forward_pass", training=False) == reading("inference_batch")


def test_the_median_of_each_side_is_compared_so_one_odd_baseline_run_moves_nothing() -> None:
    odd = [figures(head_forward=0.10), figures(head_forward=0.10), figures(head_forward=5.0)]
    found = explain(["forward_pass"], [figures(head_forward=0.3)], odd)
    assert found.contributions[0].baseline == pytest.approx(0.10)


def test_modules_whose_growth_is_noise_beside_the_largest_are_not_named() -> None:
    noisy = ModuleFigures.of_breakdown(breakdown(head_forward=0.5))
    assert noisy is not None
    parts = {k: dict(v) for k, v in noisy.parts.items()}
    parts["rpn"]["forward_s"] = 0.021  # +1 ms against +400 ms
    found = explain(["forward_pass"], [ModuleFigures(parts, noisy.memory, noisy.whole, noisy.step_s)], BASELINE)
    assert [c.module for c in found.contributions] == ["roi_heads"]


def test_a_module_the_baseline_lacks_counts_whole() -> None:
    grown = breakdown()
    grown["parts"].append({"module": "mask_head", "forward_s": 0.3, "backward_s": 0.1, "activations_bytes": 64 * MiB})
    found = explain(["peak_ram_memory"], [ModuleFigures.of_breakdown(grown)], BASELINE)
    first = found.contributions[0]
    assert (first.module, first.baseline, first.growth) == ("mask_head", None, 64 * MiB)
    assert "mask_head activations +64.00 MiB (none: new -> 64.00 MiB)" in found.line("peak_ram_memory")


def test_without_a_baseline_the_largest_shares_are_named() -> None:
    found = explain(["forward_pass", "peak_ram_memory"], [figures(head_forward=0.48)])
    assert found.line("forward_pass") == (
        "forward_pass largest: roi_heads 48 % of the step (forward 480.0 ms), backbone.body 21 % of the step "
        "(forward 210.0 ms), rpn 2 % of the step (forward 20.0 ms)"
    )
    assert found.line("peak_ram_memory").startswith(
        "peak_ram_memory largest: backbone.body 5 % of the peak (activations 50.00 MiB), roi_heads 1 % of the peak"
    )
    assert found.lines()[0] == "module by module (no baseline to compare with):"
    assert found.brief() == (
        "forward_pass largest: roi_heads 48 % of the step (forward 480.0 ms); "
        "peak_ram_memory largest: backbone.body 5 % of the peak (activations 50.00 MiB)"
    )


def test_where_nothing_grew_the_largest_shares_are_named() -> None:
    found = explain(["peak_ram_memory"], [figures()], BASELINE)  # a budget broken by a model that did not change
    assert found.contributions[0].growth is None and found.contributions[0].module == "backbone.body"


def test_a_baseline_saved_before_runs_kept_module_figures_says_so() -> None:
    found = explain(["forward_pass"], [figures(head_forward=0.5)], [None, None])
    assert found.lines()[0] == "module by module (the baseline keeps no per-module figures: saved before it kept them):"
    assert found.contributions[0].growth is None


def test_a_share_of_another_peak_is_not_given() -> None:
    """The split is of the GPU peak on a GPU: the RAM peak's share of it would be wrong."""
    found = explain(["peak_ram_memory"], [figures(on_gpu=True)])
    assert all(c.share is None for c in found.contributions)


def test_figures_no_part_explains_and_runs_without_a_breakdown_explain_nothing() -> None:
    assert not explain(["peak_cpu_utilization", "energy_per_training"], [figures()], BASELINE)
    assert not explain(["forward_pass"], [None], BASELINE)
    assert ModuleFigures.of_breakdown(None) is None
    assert ModuleFigures.of_breakdown({"parts": [], "memory": None}) is None


def test_an_explanation_survives_the_report_and_reads_the_same() -> None:
    wider = figures(head_activations=90 * MiB, head_forward=0.4)
    found = explain(["peak_ram_memory", "forward_pass"], [wider], BASELINE)
    again = Explanation.from_dicts(found.to_dicts())
    assert again.contributions == found.contributions
    assert again.lines()[1:] == found.lines()[1:]
    assert Explanation.from_dicts([{"module": "no metric"}, "junk"]).contributions == ()
    assert Explanation.from_dicts(None).lines() == []


def test_a_run_keeps_its_module_figures_and_reads_older_runs_without_them() -> None:
    run = Run({"forward_pass": 0.5}, {"forward_pass": [0.5, 0.5]}, breakdown=figures())
    stored = run.to_dict()
    assert Run.from_dict(stored) == run
    assert stored["breakdown"]["parts"]["roi_heads"]["activations_bytes"] == 10 * MiB
    assert stored["breakdown"]["memory"]["whole"] == "peak_ram_memory"  # the metric the split is of
    older = Run.from_dict({"metrics": {"forward_pass": 0.5}, "samples": {}, "contended": False})
    assert older.breakdown is None and "breakdown" not in older.to_dict()
    damaged = Run.from_dict({"metrics": {"forward_pass": 0.5}, "samples": {}, "breakdown": {"parts": "x"}})
    assert damaged.metrics == {"forward_pass": 0.5}  # a damaged breakdown costs the explanation, not the run

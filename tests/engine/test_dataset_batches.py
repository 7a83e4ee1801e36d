"""A scenario's dataset: batches drawn from its annotation file (real sizes, boxes, labels, masks), or from the
summary of one; the worst batches for memory named by their image ids; the defaults a dataset gives a
scenario; the cache key follows the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_mlestimate.api import estimate
from pytest_mlestimate.core.errors import ModelBuildError
from pytest_mlestimate.profiling.dataset_batches import SAMPLE_BATCHES, draw_batches
from pytest_mlestimate.scenarios.coco import summarise_file
from pytest_mlestimate.scenarios.scenario import Scenario, ScenarioError, parse_scenario
from pytest_mlestimate.stores.profile_cache import profile_key
from tests.tiny_scenario import TINY

TRIANGLE = [[0.0, 0.0, 40.0, 0.0, 0.0, 40.0]]  # 800 px


def coco(big: bool = False, small: int = 10) -> dict[str, Any]:
    """``small`` 64x48 images with one or two instances, one with a crowd region; ``big`` adds a 640x480 image
    holding 30 instances."""
    images = [{"id": 100 + i, "width": 64, "height": 48} for i in range(small)]
    annotations: list[dict[str, Any]] = []
    for i in range(small):
        for j in range(1 + i % 2):
            annotations.append(
                {"id": len(annotations) + 1, "image_id": 100 + i, "category_id": 3, "bbox": [4 + j, 6, 20, 10],
                 "segmentation": TRIANGLE if j == 0 else {"size": [48, 64], "counts": [0, 48, 48 * 63]}}
            )  # fmt: skip
    annotations.append(
        {"id": 99, "image_id": 100, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 1,
         "segmentation": {"size": [48, 64], "counts": [0, 48 * 64]}}
    )  # fmt: skip
    if big:
        images.append({"id": 7, "width": 640, "height": 480})
        for k in range(30):
            annotations.append(
                {"id": 1000 + k, "image_id": 7, "category_id": 1, "bbox": [10 * k, 10, 12, 300],
                 "segmentation": [[10.0 * k, 10, 10.0 * k + 12, 10, 10.0 * k + 12, 310, 10.0 * k, 310]]}
            )  # fmt: skip
    categories = [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}]
    return {"images": images, "annotations": annotations, "categories": categories}


@pytest.fixture
def annotations(tmp_path: Path) -> Path:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco(big=True)))
    return path


def test_batches_hold_the_files_images_and_instances_and_leave_crowds_out(annotations: Path) -> None:
    drawn = draw_batches(str(annotations), 2, "masks", 4)
    assert drawn.annotated and len(drawn.sample) == SAMPLE_BATCHES
    document = coco(big=True)
    sizes = {image["id"]: (image["height"], image["width"]) for image in document["images"]}
    for batch in drawn.sample:
        assert len(batch.ids) == 2 and len(set(batch.ids)) == 2
        for image_id, image, target in zip(batch.ids, batch.images, batch.targets, strict=True):
            assert tuple(image.shape[1:]) == sizes[image_id]
            own = [a for a in document["annotations"] if a["image_id"] == image_id and not a.get("iscrowd")]
            assert len(target["boxes"]) == len(own)
            x, y, w, h = own[0]["bbox"]
            assert target["boxes"][0].tolist() == [x, y, x + w, y + h]
            assert target["labels"].tolist() == [a["category_id"] for a in own]
            assert tuple(target["masks"].shape) == (len(own), *sizes[image_id])
            if image_id != 7:  # the triangle's pixels, rasterised as pycocotools does
                assert 760 <= int(target["masks"][0].sum()) <= 860
    described = drawn.describe()
    worst = described["worst_batches"]
    assert worst["largest images"]["image_ids"][0] == 7 and worst["most instances"]["image_ids"][0] == 7
    assert worst["most instances"]["instances"] == 30 + 2  # 7, then an image with two
    assert worst["largest images"]["padded"] == [480, 640]
    largest, crowded = drawn.worst()
    assert largest.ids == worst["largest images"]["image_ids"] and len(crowded.targets[0]["boxes"]) == 30
    assert described["sha256"] == summarise_file(annotations).sha256


def test_the_same_file_draws_the_same_batches(annotations: Path) -> None:
    first, again = draw_batches(str(annotations), 3, "boxes", 4), draw_batches(str(annotations), 3, "boxes", 4)
    assert [b.ids for b in first.sample] == [b.ids for b in again.sample]


def test_a_summary_gives_the_images_sizes_and_instance_counts(annotations: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text(summarise_file(annotations).model_dump_json())
    drawn = draw_batches(str(summary), 2, "boxes", 4)
    assert not drawn.annotated
    rows = {row[0]: row for row in summarise_file(annotations).per_image}
    for batch in drawn.sample:
        for image_id, image, target in zip(batch.ids, batch.images, batch.targets, strict=True):
            assert tuple(image.shape[1:]) == (rows[image_id][2], rows[image_id][1])
            assert len(target["boxes"]) == rows[image_id][3]
            assert bool((target["boxes"][:, 2:] > target["boxes"][:, :2]).all())


def test_a_model_with_fewer_classes_than_the_datasets_ids_is_told_what_it_needs(annotations: Path) -> None:
    with pytest.raises(ModelBuildError, match=r"category ids reach 3.*num_classes must be at least 4"):
        draw_batches(str(annotations), 2, "boxes", 3)


def test_a_dataset_gives_the_scenario_its_size_classes_and_typical_image(annotations: Path) -> None:
    bare = {key: value for key, value in TINY.items() if key not in ("dataset_size", "image_size")}
    scenario = parse_scenario({**bare, "dataset": str(annotations)})
    assert scenario.dataset_size == 11 and scenario.num_classes == 4 and scenario.image_size == (48, 64)
    kept = parse_scenario({**TINY, "dataset": str(annotations), "num_classes": 10})
    assert kept.dataset_size == TINY["dataset_size"] and kept.num_classes == 10
    with pytest.raises(ScenarioError, match=r"dataset: .*missing\.json: cannot be read"):
        parse_scenario({**TINY, "dataset": str(annotations.parent / "missing.json")})


def test_the_cache_key_follows_the_files_content(annotations: Path) -> None:
    scenario = parse_scenario({**TINY, "dataset": str(annotations)})
    before = profile_key(scenario)
    assert profile_key(parse_scenario(TINY)) != before
    annotations.write_text(json.dumps(coco(big=False)))
    assert profile_key(parse_scenario({**TINY, "dataset": str(annotations)})) != before


def test_the_worst_batch_sets_the_peak_and_is_named(tmp_path: Path) -> None:
    """The same small images with and without one large crowded image, which the sample does not draw: the
    peak includes it all the same."""
    small, large = tmp_path / "small.json", tmp_path / "large.json"
    small.write_text(json.dumps(coco(big=False, small=300)))
    document = coco(big=True, small=300)
    document["images"][-1].update(width=2400, height=1800)
    large.write_text(json.dumps(document))
    peaks = {}
    for path in (small, large):
        scenario = {**TINY, "architecture": "pytest_mlestimate.tiny:tiny_segmenter", "task_type": "instance",
                    "dataset": str(path), "measure_iterations": 4, "breakdown_depth": 0}  # fmt: skip
        found = estimate(scenario, cache=False)
        peaks[path.name] = found.profile.training.peak_rss if found.profile.training else 0
        # inference met each of the 8 sampled batches, and each one's first image, at least once
        assert min(len(found.profile.inference_batch_times), len(found.profile.inference_one_times)) >= 8
        drawn = found.to_dict()["details"]["dataset"]
        worst = drawn["worst_batches"]
        if path is large:
            assert all(7 not in batch for batch in drawn["sampled_batches"])  # only a worst batch holds it
            assert worst["largest images"]["image_ids"][0] == 7
            assert worst["largest images"]["padded"] == [1800, 2400]
    # holding the large image's batch and its 30 masks costs about 480 MB; training on it, about 1.1 GB
    assert peaks["large.json"] > peaks["small.json"] + 800 * 2**20, peaks


def test_the_tiny_model_trains_on_images_of_mixed_sizes_as_torchvisions_models_do() -> None:
    from pytest_mlestimate.tiny import tiny_segmenter

    images = [torch.rand(3, 48, 64), torch.rand(3, 100, 30)]
    targets = [
        {"boxes": torch.tensor([[1.0, 2.0, 20.0, 30.0]]), "labels": torch.tensor([1]),
         "masks": torch.ones(1, *image.shape[1:], dtype=torch.uint8)}
        for image in images
    ]  # fmt: skip
    losses = tiny_segmenter()(images, targets)
    assert all(bool(torch.isfinite(loss)) for loss in losses.values()) and "loss_mask" in losses


def test_a_summary_carried_inline_is_the_dataset(annotations: Path) -> None:
    """What a service request carries instead of a file: the same defaults and batches, keyed by its content."""
    summary = summarise_file(annotations)
    bare = {key: value for key, value in TINY.items() if key not in ("dataset_size", "image_size")}
    scenario = parse_scenario({**bare, "dataset": json.loads(summary.model_dump_json())})
    assert scenario.dataset == summary and scenario.dataset_size == 11 and scenario.num_classes == 4
    assert Scenario.model_validate_json(scenario.model_dump_json()) == scenario  # as it reaches the profiling child
    drawn = draw_batches(summary, 2, "boxes", 4)
    assert not drawn.annotated and drawn.describe()["worst_batches"]["most instances"]["image_ids"][0] == 7
    assert len(json.dumps(scenario.profile_fields())) < 2000  # a digest, not one row per image
    fewer = summary.model_copy(update={"per_image": summary.per_image[:-1]})
    assert profile_key(parse_scenario({**TINY, "dataset": fewer.model_dump(mode="json")})) != profile_key(scenario)
    with pytest.raises(ScenarioError, match="dataset: not a summary mlestimate dataset-stats wrote"):
        parse_scenario({**TINY, "dataset": {"per_image": "rows"}})


def orientations(tmp_path: Path) -> Path:
    """Six landscape and six portrait images, one instance each, then a wide one (300x64) and a tall one
    (64x200, three instances)."""
    sizes = [(96, 64)] * 6 + [(64, 96)] * 6 + [(300, 64), (64, 200)]
    images = [{"id": i + 1, "width": w, "height": h} for i, (w, h) in enumerate(sizes)]
    annotations = [
        {"id": n + 1, "image_id": image_id, "category_id": 1, "bbox": [2, 2, 20, 20]}
        for n, image_id in enumerate([*range(1, 15), 14, 14])
    ]
    path = tmp_path / "orientations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}))
    return path


def test_grouped_batches_hold_one_aspect_ratio_group_and_so_does_the_worst(tmp_path: Path) -> None:
    path = orientations(tmp_path)
    landscape = {1, 2, 3, 4, 5, 6, 13}
    mixed = draw_batches(str(path), 2, "boxes", 2)
    assert any(len({i in landscape for i in batch.ids}) == 2 for batch in mixed.sample)
    assert mixed.describe()["worst_batches"]["largest images"]["padded"] == [200, 300]  # the wide with the tall
    grouped = draw_batches(str(path), 2, "boxes", 2, group_factor=0)
    for batch in grouped.sample:
        assert len({i in landscape for i in batch.ids}) == 1, batch.ids
    worst = grouped.describe()["worst_batches"]
    assert worst["largest images"] == {"image_ids": [13, 1], "padded": [64, 300], "instances": 2}
    assert worst["most instances"]["image_ids"][0] == 14
    assert grouped.describe()["aspect_ratio_group_factor"] == 0


def test_aspect_ratio_groups_are_torchvisions_bins() -> None:
    """torchvision's reference training: ``np.digitize`` of width / height over ``2 ** linspace(-1, 1, 2k + 1)``."""
    import numpy as np

    from pytest_mlestimate.profiling.dataset_batches import _Image, aspect_ratio_groups

    ratios = [0.3, 0.5, 0.62, 0.63, 0.8, 1.0, 1.25, 1.26, 1.6, 2.0, 3.5]
    images = [_Image(n, round(r * 1000), 1000, 1) for n, r in enumerate(ratios)]
    for factor in (0, 1, 3):
        edges = (2 ** np.linspace(-1, 1, 2 * factor + 1)).tolist() if factor else [1.0]
        expected: dict[int, list[int]] = {}
        for image in images:
            expected.setdefault(int(np.digitize(image.width / image.height, edges)), []).append(image.id)
        found = [[image.id for image in group] for group in aspect_ratio_groups(images, factor)]
        assert found == [expected[key] for key in sorted(expected)]


def test_grouping_without_a_dataset_is_refused() -> None:
    with pytest.raises(ScenarioError, match="aspect_ratio_group_factor groups a dataset's images"):
        parse_scenario({**TINY, "aspect_ratio_group_factor": 3})


def test_the_time_sample_holds_a_skewed_datasets_mix_of_crowded_and_sparse_images(tmp_path: Path) -> None:
    """A few batches drawn at random can miss a skewed dataset's mean (8 batches of 2 from 40 crowded images came
    7 % under its instances per image); a stratified sample holds one image from each slice of the ranking."""
    sizes = [(64, 48)] * 40
    images = [{"id": i + 1, "width": w, "height": h} for i, (w, h) in enumerate(sizes)]
    counts = [1] * 30 + [40] * 10  # a quarter of the images hold nearly all the instances
    annotations = [
        {"id": 1000 * image + k, "image_id": image, "category_id": 1, "bbox": [1, 1, 8, 8]}
        for image, count in zip(range(1, 41), counts, strict=True)
        for k in range(count)
    ]
    path = tmp_path / "skewed.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}))
    drawn = draw_batches(str(path), 2, "boxes", 2)
    sampled = [counts[i - 1] for batch in drawn.sample for i in batch.ids]
    assert len(sampled) == 16 and len(set(i for batch in drawn.sample for i in batch.ids)) == 16
    assert sampled.count(40) == 4  # a quarter of the sample, as of the dataset


def test_the_pass_before_the_worst_batches_is_an_epochs_batches_in_a_shuffled_order(tmp_path: Path) -> None:
    path = orientations(tmp_path)
    landscape = {1, 2, 3, 4, 5, 6, 13}
    passing = [batch.ids for batch in draw_batches(str(path), 2, "boxes", 2).passing()]
    assert sorted(i for ids in passing for i in ids) == list(range(1, 15))  # each image once
    grouped = [batch.ids for batch in draw_batches(str(path), 2, "boxes", 2, group_factor=1).passing()]
    assert all(len({i in landscape for i in ids}) == 1 for ids in grouped)  # one orientation a batch
    assert grouped != sorted(grouped)


def test_the_pass_goes_on_while_the_memory_high_water_rises_then_the_worst_batches_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The allocator's growth over a pass is what the untimed steps are for: they stop once the high-water has
    risen less than the rule allows over its patience, and the worst batches train after them."""
    from pytest_mlestimate.profiling import session as session_module
    from pytest_mlestimate.profiling.dataset_batches import PASS_STEPS

    path = tmp_path / "many.json"
    path.write_text(json.dumps(coco(big=True, small=300)))
    rising_for = 12
    trained: list[list[int]] = []
    real_step = session_module.Session._untimed_step

    def step(self: Any, batch: Any) -> None:
        trained.append(list(batch.ids))
        real_step(self, batch)

    def high_water(self: Any) -> int:  # grows 5 % a step for twelve steps, then stays
        return int(1e9 * 1.05 ** min(len(trained), rising_for))

    monkeypatch.setattr(session_module.Session, "_untimed_step", step)
    monkeypatch.setattr(session_module.Session, "memory_high_water", high_water)
    scenario = {**TINY, "dataset": str(path), "measure_iterations": 2, "breakdown_depth": 0}
    found = estimate(scenario, cache=False, isolate=False).to_dict()["details"]["dataset"]  # in this process
    assert found["pass_before_worst"]["steps"] == rising_for + PASS_STEPS.patience
    assert f"rose under 1 % over its last {PASS_STEPS.patience} steps" in found["pass_before_worst"]["stopped"]
    worst = [batch["image_ids"] for batch in found["worst_batches"].values()]
    assert trained[-2:] == worst and len(trained) == rising_for + PASS_STEPS.patience + 2


def test_the_pass_ends_with_the_epochs_batches_where_they_are_fewer(annotations: Path) -> None:
    found = estimate({**TINY, "dataset": str(annotations), "measure_iterations": 2, "breakdown_depth": 0}, cache=False)
    passed = found.to_dict()["details"]["dataset"]["pass_before_worst"]
    assert passed == {"steps": 5, "stopped": "after 5 steps: the epoch's batches"}  # 11 images: 5 full batches of 2


def test_a_loss_that_diverges_in_the_pass_ends_it_and_the_worst_batches_start_from_finite_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_mlestimate.profiling import session as session_module

    path = tmp_path / "many.json"
    path.write_text(json.dumps(coco(big=True, small=300)))
    trained: list[list[int]] = []
    real_step = session_module.Session._untimed_step

    def step(self: Any, batch: Any) -> None:
        trained.append(list(batch.ids))
        if len(trained) == 3:
            with torch.no_grad():  # what a diverged step leaves behind
                for parameter in self.model.parameters():
                    parameter.fill_(float("nan"))
            raise session_module.Diverged(self.steps, 0.01, float("nan"), 1.0)
        real_step(self, batch)
        assert all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    monkeypatch.setattr(session_module.Session, "_untimed_step", step)
    scenario = {**TINY, "dataset": str(path), "measure_iterations": 2, "breakdown_depth": 0}
    found = estimate(scenario, cache=False, isolate=False)
    passed = found.to_dict()["details"]["dataset"]["pass_before_worst"]
    assert passed == {"steps": 2, "stopped": "the loss became nan at its step 3"}
    assert any("the worst batches trained from the starting state" in w for w in found.warnings())
    assert len(trained) == 3 + 2  # the worst batches trained after it, on finite weights (asserted in the step)

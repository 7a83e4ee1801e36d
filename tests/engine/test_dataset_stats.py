"""A COCO annotation file checked and summarised: the figures a user's data has, and bad files named where they
are bad (``mlestimate dataset-stats``)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_mlestimate.commands.cli import main
from pytest_mlestimate.scenarios.coco import (
    DatasetError,
    DatasetSummary,
    summarise,
    summarise_file,
    training_annotations,
)

SQUARE = [[10.0, 10.0, 20.0, 10.0, 20.0, 20.0, 10.0, 20.0]]  # 10 x 10 px


def coco() -> dict[str, Any]:
    return {
        "images": [
            {"id": 1, "width": 100, "height": 50, "file_name": "a.jpg"},
            {"id": 2, "width": 64, "height": 64},
            {"id": 7, "width": 200, "height": 100},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 10, 10], "segmentation": SQUARE},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 100, 50], "segmentation": SQUARE},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [5, 5, 5, 5]},
            # 64 x 64 image, column-major runs: 0 off, then 64 on (the first column), the rest off
            {
                "id": 4,
                "image_id": 2,
                "category_id": 1,
                "bbox": [0, 0, 1, 64],
                "segmentation": {"size": [64, 64], "counts": [0, 64, 64 * 63]},
            },
            {
                "id": 5,
                "image_id": 2,
                "category_id": 1,
                "bbox": [0, 0, 64, 64],
                "iscrowd": 1,
                "segmentation": {"size": [64, 64], "counts": [0, 4096]},
            },
        ],
    }


def test_the_summary_holds_the_datasets_shape(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco()))
    summary = summarise_file(path)
    assert (summary.images, summary.annotations, summary.crowd) == (3, 5, 1)
    assert summary.categories == {"1": "cat", "3": "dog"} and summary.num_classes == 4
    assert summary.masks == "mixed" and summary.keypoints is None
    assert summary.per_image == [(1, 100, 50, 3), (2, 64, 64, 1), (7, 200, 100, 0)]  # the crowd region not counted
    assert summary.most_crowded(2) == [(1, 3), (2, 1)]
    assert summary.instances_per_image.max == 3 and summary.instances_per_image.min == 0
    assert summary.aspect_ratio.max == 2.0 and summary.aspect_ratio.min == 1.0
    assert summary.mask_area_fraction is not None
    assert summary.mask_area_fraction.min == pytest.approx(64 / 4096)  # one column of the 64 x 64 image
    assert summary.mask_area_fraction.max == 1.0  # the crowd region covers its image
    assert summary.box_area_fraction is not None and summary.box_area_fraction.max == 1.0
    assert summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert DatasetSummary.model_validate_json(summary.model_dump_json()) == summary
    assert "3 images, 5 annotations (1 crowd), 2 categories (num_classes 4)" in summary.describe()


def test_a_polygon_mask_has_its_drawn_area() -> None:
    document = coco()
    document["annotations"] = document["annotations"][:1]
    summary = summarise(document, "one.json", "0")
    assert summary.mask_area_fraction is not None
    assert summary.mask_area_fraction.max * 100 * 50 == pytest.approx(100, rel=0.05)  # rasterised 10 x 10 px


def test_keypoints_are_counted_per_instance() -> None:
    document = coco()
    document["categories"][0]["keypoints"] = ["nose", "tail"]
    for annotation in document["annotations"]:
        annotation["keypoints"] = [1, 1, 2, 3, 3, 2]
    assert summarise(document, "k.json", "0").keypoints == 2
    document["annotations"][0]["keypoints"] = [1, 1, 2]
    with pytest.raises(DatasetError, match=r"annotations\[0\]\.keypoints: 1 keypoints, where its category names 2"):
        summarise(document, "k.json", "0")


def change(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set the entry at ``path`` (``annotations.0.bbox``) to ``value``; ``...`` removes it."""

    def apply(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        key: Any = int(last) if last.isdigit() else last
        if value is ...:
            del node[key]
        else:
            node[key] = value

    return apply


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (change("annotations.0.bbox", [10, 10, 0, 10]), r"annotations\[0\]\.bbox: the box \[10, 10, 0, 10\] has no"),
        (change("annotations.0.bbox", [10, 10, -3, 10]), r"annotations\[0\]\.bbox: .* has no area"),
        (change("annotations.0.bbox", [90, 10, 30, 10]), r"annotations\[0\]\.bbox: .* reaches outside its 100x50"),
        (change("annotations.0.bbox", "10 10 5 5"), r"annotations\[0\]\.bbox: \[x, y, width, height\]"),
        (change("annotations.1.category_id", 9), r"annotations\[1\]\.category_id: 9 is not one of the categories"),
        (change("annotations.2.image_id", 99), r"annotations\[2\]\.image_id: 99 is not the id of an image"),
        (change("annotations.0.segmentation", [[10, 10, 500, 10, 20, 20]]),
         r"annotations\[0\]\.segmentation\[0\]: the polygon reaches outside its 100x50 image"),
        (change("annotations.0.segmentation", [[10, 10, 20]]), r"annotations\[0\]\.segmentation\[0\]: a polygon is"),
        (change("annotations.3.segmentation.size", [32, 32]),
         r"annotations\[3\]\.segmentation\.size: \[32, 32\] is not its image's \[height, width\], \[64, 64\]"),
        (change("annotations.3.segmentation.counts", [0, 10]),
         r"annotations\[3\]\.segmentation\.counts: the runs cover 10"),
        (change("annotations.4.iscrowd", 2), r"annotations\[4\]\.iscrowd: 2 is not 0 or 1"),
        (change("images.1.width", ...), r"images\[1\]\.width: an integer is required, found missing"),
        (change("images.1.height", 0), r"images\[1\]: width and height must be positive, found 64x0"),
        (change("images.2.id", 1), r"images\[2\]\.id: 1 is the id of an earlier image too"),
        (change("categories.1.name", None), r"categories\[1\]\.name: text is required, found null"),
        (change("annotations", {}), r"annotations: a list is required, found an object"),
        (change("images", []), r"images: the file has no image"),
    ],
)  # fmt: skip
def test_a_bad_entry_is_named_by_its_file_and_json_path(
    tmp_path: Path, mutation: Callable[[dict[str, Any]], None], message: str
) -> None:
    document = copy.deepcopy(coco())
    mutation(document)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DatasetError, match=rf"^{path}: {message}"):
        summarise_file(path)


def test_a_file_past_the_limit_or_not_json_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text(json.dumps(coco()))
    with pytest.raises(DatasetError, match=r"big\.json is \d[\d,]* bytes; at most 100 are read"):
        summarise_file(path, max_bytes=100)
    path.write_text('{"images": [1,')
    with pytest.raises(DatasetError, match=r"big\.json: not JSON: parse error: premature EOF"):
        summarise_file(path)


values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.sampled_from(
        ["id", "width", "height", "image_id", "category_id", "bbox", "segmentation", "size", "counts", "iscrowd",
         "keypoints", "name", "images", "annotations", "categories"]), inner, max_size=6),
    max_leaves=40,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(document=values, image=values, annotation=values)
def test_any_json_is_summarised_or_refused_with_a_dataset_error(document: Any, image: Any, annotation: Any) -> None:
    candidates = [document, {**coco(), "images": [image]}, {**coco(), "annotations": [annotation]}]
    for candidate in candidates:
        try:
            summarise(candidate, "fuzz.json", "0")
        except DatasetError as exc:
            assert str(exc).startswith("fuzz.json")


def test_the_command_writes_the_summary_and_refuses_bad_input_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco()))
    assert main(["dataset-stats", str(path)]) == 0
    written = tmp_path / "instances.stats.json"
    assert DatasetSummary.model_validate_json(written.read_text()).images == 3
    assert f"summary written: {written}" in capsys.readouterr().out

    assert main(["dataset-stats", str(path), "-o", str(path)]) == 2
    assert "is the file it reads" in capsys.readouterr().err
    broken = coco()
    broken["annotations"][0]["bbox"] = [1, 1, 0, 0]
    path.write_text(json.dumps(broken))
    before = written.read_text()
    assert main(["dataset-stats", str(path)]) == 2
    assert f"{path}: annotations[0].bbox" in capsys.readouterr().err
    assert written.read_text() == before  # an earlier summary is kept, not overwritten with nothing
    assert main(["dataset-stats", str(path), "--max-size", "lots"]) == 2
    assert "--max-size" in capsys.readouterr().err


def test_a_large_file_is_read_entry_by_entry_so_memory_follows_the_images_not_the_file(tmp_path: Path) -> None:
    import tracemalloc

    document = coco()
    extra = list(range(2_000))  # what a real file carries beside the shape: attributes, captions, scores
    document["annotations"] = [
        {"id": k, "image_id": 7, "category_id": 1, "bbox": [1, 1, 50, 40], "attributes": extra} for k in range(3_000)
    ]
    path = tmp_path / "large.json"
    path.write_text(json.dumps(coco()))
    summarise_file(path)  # what a first summary imports is not the reading's
    path.write_text(json.dumps(document))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        summary = summarise_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.annotations == 3_000 and summary.per_image[2] == (7, 200, 100, 3_000)
    assert size > 20e6 and peak < size / 10, f"peak {peak:,} B reading a {size:,} B file"  # parsed whole: > size


def test_the_parts_may_come_in_any_order_and_text_after_the_object_is_refused(tmp_path: Path) -> None:
    document = coco()
    reordered = {key: document[key] for key in ("annotations", "categories", "images")}
    path = tmp_path / "order.json"
    path.write_text(json.dumps(reordered))
    assert summarise_file(path).per_image == [(1, 100, 50, 3), (2, 64, 64, 1), (7, 200, 100, 0)]
    path.write_text(json.dumps(reordered) + " {}")
    with pytest.raises(DatasetError, match=r"order\.json: not JSON: parse error: trailing garbage"):
        summarise_file(path)
    path.write_text("[]")
    with pytest.raises(DatasetError, match=r"order\.json: a COCO annotation file is a JSON object"):
        summarise_file(path)


def test_an_instance_under_a_pixel_is_not_counted_as_one_training_uses(tmp_path: Path) -> None:
    document = coco()
    document["annotations"][2]["bbox"] = [5, 5, 0.5, 5]  # kept in the file, left out of training
    path = tmp_path / "thin.json"
    path.write_text(json.dumps(document))
    summary = summarise_file(path)
    assert summary.annotations == 5 and summary.per_image[0] == (1, 100, 50, 2)


def test_a_summary_is_not_summarised_again_and_an_object_is_not_a_list(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(coco()))
    summary = tmp_path / "data.stats.json"
    summary.write_text(summarise_file(path).model_dump_json())
    with pytest.raises(DatasetError, match=r"data\.stats\.json: a summary already, not a COCO annotation file"):
        summarise_file(summary)
    document = coco()
    document["annotations"] = {"item": document["annotations"][0]}  # a path ijson would read as a list's item
    path.write_text(json.dumps(document))
    with pytest.raises(DatasetError, match=r"data\.json: annotations: a list is required, found an object"):
        summarise_file(path)


def test_a_file_that_is_not_json_says_what_and_near_what(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        '{"images": [{"id": 1, "width": 10, "height": 10}], "categories": [{"id": 1, "name": "a"}], '
        '"annotations": [nope]}'
    )
    with pytest.raises(DatasetError, match=r"bad\.json: not JSON: lexical error: .* near .*\[nope\]"):
        summarise_file(path)
    path.write_bytes(b'{"images": "\xff\xfe"}')
    with pytest.raises(DatasetError, match=r"bad\.json: not JSON: .*error") as raised:
        summarise_file(path)
    assert "\\n" not in str(raised.value) and "b'" not in str(raised.value)


def test_the_images_are_checked_before_the_annotations_of_a_parsed_document() -> None:
    with pytest.raises(DatasetError, match=r"images\[0\]\.width: an integer is required"):
        summarise({"images": [{"id": 1}], "categories": []}, "d.json", "0")


def test_the_annotations_of_drawn_images_come_from_the_file_the_summary_was_read_from(tmp_path: Path) -> None:

    path = tmp_path / "data.json"
    path.write_text(json.dumps(coco()))
    summary = summarise_file(path)
    found = training_annotations(path, summary, [1, 2])
    assert [a["id"] for a in found[1]] == [1, 2, 3] and [a["id"] for a in found[2]] == [4]  # the crowd left out
    changed = coco()
    del changed["annotations"][0]
    path.write_text(json.dumps(changed))
    with pytest.raises(DatasetError, match=r"data\.json: changed since it was read; estimate again"):
        training_annotations(path, summary, [1])


def test_a_box_nested_thousands_deep_is_told_as_such(tmp_path: Path) -> None:
    deep: Any = [1.0]
    for _ in range(5_000):
        deep = [deep]
    document = coco()
    document["annotations"][0]["bbox"] = deep
    with pytest.raises(DatasetError, match=r"^d\.json: nested too deep to be a COCO annotation file"):
        summarise(document, "d.json", "0")

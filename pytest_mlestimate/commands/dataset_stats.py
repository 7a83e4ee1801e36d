"""``mlestimate dataset-stats ANNOTATIONS.json``: a COCO annotation file checked and summarised as a small JSON.

Imports no torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pytest_mlestimate.core.files import same_file, write_atomically
from pytest_mlestimate.core.units import UnitError, parse_quantity


def add_parser(commands: Any) -> None:
    stats = commands.add_parser(
        "dataset-stats",
        help="check a COCO annotation file and write the summary of its shape",
        description="Check a COCO-format annotation file entry by entry and write its summary as JSON: image and "
        "instance counts, image, box and mask sizes, categories, one row per image and the file's SHA-256 (needs "
        "the coco extra for masks). Exits 0 when written, 2 when the file is not a usable COCO file (the message "
        "names the JSON path of the first bad entry).",
    )
    stats.add_argument("annotations", type=Path, metavar="ANNOTATIONS.json", help="a COCO annotation file")
    stats.add_argument("-o", "--output", type=Path, help="the summary to write (default: ANNOTATIONS with .stats.json)")
    stats.add_argument(
        "--max-size", default="1 GiB", help="the largest annotation file read, e.g. '2 GiB' (default 1 GiB)"
    )
    stats.set_defaults(run=dataset_stats_command)


def dataset_stats_command(args: argparse.Namespace) -> int:
    from pytest_mlestimate.scenarios.coco import DatasetError, summarise_file

    try:
        limit = int(parse_quantity(args.max_size, "bytes"))
    except UnitError as exc:
        print(f"mlestimate dataset-stats: --max-size: {exc}", file=sys.stderr)
        return 2
    output = args.output or args.annotations.with_suffix(".stats.json")
    if same_file(output, args.annotations):
        print(f"mlestimate dataset-stats: {output} is the file it reads: give another -o path", file=sys.stderr)
        return 2
    try:
        summary = summarise_file(args.annotations, limit)
    except DatasetError as exc:
        print(f"mlestimate dataset-stats: {exc}", file=sys.stderr)
        return 2
    try:
        write_atomically(output, summary.model_dump_json(indent=1) + "\n")
    except OSError as exc:
        print(f"mlestimate dataset-stats: {output} cannot be written ({exc.strerror or exc})", file=sys.stderr)
        return 2
    print(summary.describe())
    print(f"summary written: {output}")
    return 0

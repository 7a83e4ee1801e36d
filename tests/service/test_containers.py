"""What can be checked of the container files without a container engine."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from pytest_mlestimate.commands.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_the_cli_and_reserves_a_gpu():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    (service,) = compose["services"].values()

    command = service["command"]
    assert command[:2] == ["mlestimate", "serve"]
    args = build_parser().parse_args(command[1:])
    assert args.host == "0.0.0.0"
    assert (args.device or "auto").startswith("cuda")
    assert f"{args.port}:{args.port}" in service["ports"]

    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]

    volume = service["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]


def test_dockerfile_serves_the_cli_on_a_pytorch_runtime_as_a_user():
    text = (ROOT / "Dockerfile").read_text()
    image = re.search(r"^ARG PYTORCH_IMAGE=(\S+)$", text, re.MULTILINE)
    assert image is not None
    assert image.group(1).startswith("pytorch/pytorch:") and image.group(1).endswith("-runtime")
    assert re.search(r"^FROM \$\{PYTORCH_IMAGE\}$", text, re.MULTILINE)

    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")

    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert cmd is not None
    command = yaml.safe_load(cmd.group(1))  # a JSON array is YAML too
    assert command[:2] == ["mlestimate", "serve"]
    build_parser().parse_args(command[1:])
    assert 'pip install --no-cache-dir ".[service]"' in text

"""``mlestimate serve`` and ``uvicorn pytest_mlestimate.service:app``: settings from flags and variables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pytest_mlestimate.commands.cli import build_parser, main, settings_from_args
from pytest_mlestimate.service.settings import ServiceSettings, SettingsError
from tests.service.fakes import EXAMPLE, TINY
from tests.service.real_server import free_port, wait_until_up


def test_flags_become_settings(monkeypatch):
    monkeypatch.setenv("MLESTIMATE_ALLOW_FACTORIES", "pkg.models:small")
    monkeypatch.setenv("MLESTIMATE_QUEUE_SIZE", "3")
    args = build_parser().parse_args(
        ["serve", "--device", "cpu", "--api-key", "k", "--allow-factory", TINY, "--max-batch-size", "64"]
    )

    settings = settings_from_args(args)

    assert settings.device == "cpu"
    assert settings.api_key == "k"
    assert settings.allowed_factories == {TINY, "pkg.models:small"}
    assert settings.queue_size == 3
    assert settings.max_batch_size == 64
    assert (args.host, args.port) == ("127.0.0.1", 8000)


def test_variables_become_settings_and_flags_win():
    environ = {
        "MLESTIMATE_DEVICE": "cuda:1",
        "MLESTIMATE_API_KEY": "from-env",
        "MLESTIMATE_ALLOW_FACTORIES": "a.b:c, d:e",
        "MLESTIMATE_PROFILE_TIMEOUT": "90",
        "MLESTIMATE_MAX_IMAGE_SIDE": "2048",
        "MLESTIMATE_WEIGHTS_DIR": "/weights",
    }

    settings = ServiceSettings.from_env(environ, api_key="from-flag")

    assert settings == ServiceSettings(
        device="cuda:1",
        api_key="from-flag",
        allowed_factories=frozenset({"a.b:c", "d:e"}),
        profile_timeout=90.0,
        max_image_side=2048,
        weights_dir=Path("/weights"),
    )


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"MLESTIMATE_DEVICE": "tpu"}, "allowed: auto, cpu, cuda, cuda:N"),
        ({"MLESTIMATE_QUEUE_SIZE": "many"}, "MLESTIMATE_QUEUE_SIZE='many'"),
        ({"MLESTIMATE_ALLOW_FACTORIES": "os.system"}, "'package.module:function'"),
        ({"MLESTIMATE_MAX_BATCH_SIZE": "10000"}, "allowed: 1 to 4096"),
        ({"MLESTIMATE_PROFILE_CPUS": "0-4095"}, "some, not all"),
        ({"MLESTIMATE_CAPACITY_SEARCHES": "0"}, "capacity_searches 0 is out of range; allowed: 1 to 64"),
        ({"MLESTIMATE_CAPACITY_TIME_LIMIT": "inf"}, "capacity_time_limit: inf is not a timeout"),
    ],
)
def test_bad_settings_are_named(environ, words):
    with pytest.raises(SettingsError) as raised:
        ServiceSettings.from_env(environ)

    assert words in str(raised.value)


def test_serve_refuses_bad_settings_before_listening(capsys):
    assert main(["serve", "--device", "tpu"]) == 2
    assert "device 'tpu'" in capsys.readouterr().err


def test_importing_the_cli_and_the_engine_loads_no_web_stack():
    code = (
        "import sys, pytest_mlestimate.commands.cli, pytest_mlestimate.api, pytest_mlestimate.service, "
        "pytest_mlestimate.service.settings; print(sorted(m for m in ('fastapi', 'uvicorn') if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert found.stdout.strip() == "[]"


@pytest.mark.parametrize("how", ["mlestimate serve", "uvicorn pytest_mlestimate.service:app"])
def test_a_real_server_starts_both_ways(how, tmp_path, monkeypatch):
    port = free_port()
    bin_dir = Path(sys.executable).parent
    if how == "mlestimate serve":
        command = [str(bin_dir / "mlestimate"), "serve", "--port", str(port), "--api-key", "k"]
    else:
        monkeypatch.setenv("MLESTIMATE_API_KEY", "k")
        command = [sys.executable, "-m", "uvicorn", "pytest_mlestimate.service:app", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        wait_until_up(server, f"{base}/healthz")
        refused = httpx.post(f"{base}/api/v1/estimate-resource", json=EXAMPLE)
        negative = EXAMPLE | {"batch_size": -1}
        invalid = httpx.post(f"{base}/api/v1/estimate-resource", json=negative, headers={"X-API-Key": "k"})
    finally:
        server.terminate()
        server.communicate(timeout=30)

    assert refused.status_code == 401
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "batch_size"]

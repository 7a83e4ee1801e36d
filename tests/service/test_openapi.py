"""The documented contract: security only where a key is set, every answer described, docs that load offline."""

from __future__ import annotations

import importlib.util
import re

import pytest

from pytest_mlestimate.commands.cli import build_parser, main, settings_from_args
from pytest_mlestimate.service.app import create_app
from pytest_mlestimate.service.settings import ServiceSettings, SettingsError
from tests.documented_keys import RESOURCE_KEYS
from tests.service.fakes import client_for

pytestmark = pytest.mark.anyio

ESTIMATES = ["/api/v1/estimate-resource", "/api/v1/estimate-training-time", "/api/v1/estimate-inference-time"]


async def schema_of(settings: ServiceSettings, measure) -> dict:
    async with client_for(create_app(settings, measure=measure)) as client:
        return (await client.get("/openapi.json")).json()


def operations(schema: dict) -> list[dict]:
    return [operation for methods in schema["paths"].values() for operation in methods.values()]


async def test_an_open_service_declares_no_security(measure):
    schema = await schema_of(ServiceSettings(), measure)

    assert "securitySchemes" not in schema["components"]
    assert not any("security" in operation for operation in operations(schema))
    assert not any("401" in operation["responses"] for operation in operations(schema))


async def test_a_keyed_service_declares_it_on_every_api_route(measure):
    schema = await schema_of(ServiceSettings(api_key="k"), measure)

    assert set(schema["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
    for path, methods in schema["paths"].items():
        for operation in methods.values():
            keyed = path.startswith("/api/v1/")
            assert ("security" in operation) is keyed, path
            assert ("401" in operation["responses"]) is keyed, path


async def test_every_answer_has_a_schema(measure):
    schema = await schema_of(ServiceSettings(api_key="k"), measure)

    for path in ESTIMATES:
        responses = schema["paths"][path]["post"]["responses"]
        assert set(responses) == {"200", "202", "401", "413", "415", "422", "500", "503", "504"}
        for status, response in responses.items():
            assert "$ref" in response["content"]["application/json"]["schema"], (path, status)
    assert set(schema["paths"]["/api/v1/jobs/{job_id}"]["get"]["responses"]) >= {"200", "401", "404"}
    for path in ("/api/v1/jobs/{job_id}", "/api/v1/environment", "/healthz"):
        (method,) = schema["paths"][path].values()
        assert "$ref" in method["responses"]["200"]["content"]["application/json"]["schema"], path


async def test_the_figure_keys_are_documented_exactly(measure):
    components = (await schema_of(ServiceSettings(), measure))["components"]["schemas"]

    resource = components["ResourceAnswer"]
    assert set(resource["required"]) == {*RESOURCE_KEYS, "units", "details", "warnings"}
    assert resource["additionalProperties"] is False
    assert set(components["BatchTime"]["required"]) == {"forward_pass", "backward_pass"}
    assert "Total Training Time" in components["TrainingTimeAnswer"]["required"]
    inference = components["InferenceTimeAnswer"]
    assert "1-Image Inference Time" in inference["required"]
    (pattern,) = inference["patternProperties"]
    assert re.fullmatch(pattern, "Batch of 8 Inference Time") and not re.fullmatch(pattern, "Batch of x Inference Time")
    assert inference["additionalProperties"] is False


async def test_the_scenario_schema_states_this_services_limits(measure):
    schema = await schema_of(ServiceSettings(max_batch_size=2, max_image_side=64), measure)

    scenario = schema["components"]["schemas"]["Scenario"]["properties"]
    assert scenario["batch_size"]["maximum"] == 2
    assert [side["maximum"] for side in scenario["image_size"]["prefixItems"]] == [64, 64]


async def test_docs_load_nothing_from_another_site(client):
    page = await client.get("/docs")
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)

    assert page.status_code == 200
    assert not re.search(r"https?://", page.text)
    if importlib.util.find_spec("swagger_ui_bundle") is not None:
        assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    else:  # the plain page: no scripts at all
        assert "<script" not in page.text
    for asset in assets:
        assert (await client.get(asset)).status_code == 200, asset
    assert (await client.get("/redoc")).status_code == 404  # ReDoc would need a CDN


@pytest.mark.parametrize("key", ["clé-secrète", "key with space", "tab\tkey", "k\u200b"])
def test_a_key_no_client_could_send_is_refused_at_start(key):
    with pytest.raises(SettingsError) as raised:
        ServiceSettings(api_key=key)

    assert "api_key" in str(raised.value)
    assert "ASCII" in str(raised.value)


def test_serve_refuses_a_non_ascii_key_before_listening(capsys, monkeypatch):
    monkeypatch.setenv("MLESTIMATE_API_KEY", "clé")

    assert main(["serve"]) == 2
    assert "MLESTIMATE_API_KEY" in capsys.readouterr().err


def test_limits_come_from_flags_and_variables(monkeypatch):
    monkeypatch.setenv("MLESTIMATE_MAX_MODEL_KWARGS", "channels=256, width=64")
    monkeypatch.setenv("MLESTIMATE_MAX_BODY_SIZE", "2048")
    args = build_parser().parse_args(["serve", "--max-model-kwarg", "width=32", "--max-model-kwarg", "*=512"])

    settings = settings_from_args(args)

    assert settings.max_model_kwargs == {"channels": 256, "width": 32, "*": 512}
    assert settings.max_body_size == 2048
    assert settings_from_args(build_parser().parse_args(["serve", "--max-body-size", "100"])).max_body_size == 100


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"MLESTIMATE_MAX_MODEL_KWARGS": "channels"}, "'channels' is not NAME=LIMIT"),
        ({"MLESTIMATE_MAX_MODEL_KWARGS": "channels=-1"}, "'channels=-1' is not NAME=LIMIT"),
        ({"MLESTIMATE_MAX_MODEL_KWARGS": "bad-name=3"}, "'bad-name' is not a keyword name"),
        ({"MLESTIMATE_MAX_BODY_SIZE": "0"}, "max_body_size 0 must be positive"),
    ],
)
def test_bad_limits_are_named(environ, words):
    with pytest.raises(SettingsError) as raised:
        ServiceSettings.from_env(environ)

    assert words in str(raised.value)


def test_a_bad_flag_limit_is_named(capsys):
    assert main(["serve", "--max-model-kwarg", "channels=many"]) == 2
    assert "--max-model-kwarg: 'channels=many'" in capsys.readouterr().err

"""The API's frame: OpenAPI from the same schemas, docs, health, JSON errors, no torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cli.services import free_port
from shared.spec import RenderParams

ROOT = Path(__file__).resolve().parents[2]


def test_openapi_document_carries_the_render_parameters(client: FlaskClient) -> None:
    reply = client.get("/v1/openapi.json")
    assert reply.status_code == 200 and reply.is_json
    spec = reply.json
    assert spec["openapi"].startswith("3.")
    schemas = spec["components"]["schemas"]
    params = schemas["RenderParams"]["properties"]
    assert set(params) == set(RenderParams.__dataclass_fields__)
    assert params["size"]["default"] == RenderParams().size and params["size"]["maximum"]
    assert {"content", "styles", "params", "priority", "webhook_url"} <= set(
        schemas["JobCreate"]["properties"])
    assert {"jobs"} <= set(schemas["BatchOfJobs"]["properties"])
    assert {"contents", "styles", "params"} <= set(schemas["BatchOfPairs"]["properties"])
    post = spec["paths"]["/v1/jobs"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "JobCreate")
    assert "error" in schemas["Error"]["properties"]


def test_openapi_refs_resolve_and_errors_are_documented(client: FlaskClient) -> None:
    spec = client.get("/v1/openapi.json").json
    text = json.dumps(spec)
    refs = set(re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', text))
    assert refs, "no $ref at all?"
    for section, name in refs:
        assert name in spec["components"][section], f"dangling $ref {section}/{name}"
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert operation.get("responses"), (method, path)
    assert "422" in spec["paths"]["/v1/batches"]["post"]["responses"]


def test_docs_page_works_offline_and_covers_every_operation(client: FlaskClient) -> None:
    spec = client.get("/v1/openapi.json").json
    page = client.get("/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert not re.search(r"<(script|link)\b", html)  # nothing fetched from elsewhere
    for path, item in spec["paths"].items():
        for method in item.keys() & {"get", "post", "delete"}:
            assert f'id="{method}-{path}"' in html, (method, path)
    for name in spec["components"]["schemas"]:
        assert f'id="schema-{name}"' in html
    assert "RenderParams" in html and "style_weight" in html  # fields of linked schemas
    assert client.get("/v1/swagger").status_code == 200  # the CDN-based one, for the online


def test_healthz(client: FlaskClient, make_app: Callable[..., Flask]) -> None:
    reply = client.get("/healthz")
    assert reply.status_code == 200
    assert reply.json == {"status": "ok", "database": {"ok": True}, "redis": {"ok": True}}
    down = make_app(redis_url="redis://127.0.0.1:1/0").test_client().get("/healthz")
    assert down.status_code == 503 and down.json["redis"]["ok"] is False
    assert down.json["database"]["ok"] is True


def test_errors_are_json(client: FlaskClient) -> None:
    for reply, status in ((client.get("/nowhere"), 404), (client.delete("/v1/jobs"), 405),
                          (client.get("/v1/jobs/unknown"), 404),
                          (client.post("/v1/jobs", json=[1, 2]), 422)):
        assert reply.status_code == status and reply.is_json, reply.data
        assert reply.json["error"]["status"] == status
    assert "POST" in client.delete("/v1/jobs").headers["Allow"]


def test_unexpected_errors_are_json_500(app: Flask) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail")

    reply = app.test_client().get("/boom")
    assert reply.status_code == 500 and reply.is_json
    assert "secret" not in reply.get_data(as_text=True)


def test_importing_the_api_never_imports_torch() -> None:
    code = ("import sys; from api import create_app; from shared.settings import Settings; "
            "import api.jobs, api.batches, api.images, shared.queue, shared.migrate; "
            "create_app(Settings(database_url='sqlite://')); "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert not any(m.startswith('worker') for m in sys.modules), 'worker imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_warm_connects_the_queue_and_survives_a_broker_that_is_down(
        make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture) -> None:
    up = make_app().extensions["stylefarm"]
    up.warm()
    assert up._celery is not None  # built before the first request, not during it
    assert "not reachable" not in caplog.text
    down = make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0").extensions["stylefarm"]
    down.warm()  # the API still starts; each request that needs the queue answers 503
    assert "queue not reachable at start" in caplog.text


def test_reads_run_in_autocommit_and_writes_in_a_transaction(app: Flask) -> None:
    from api.context import db

    def isolation() -> str | None:
        return db().connection().get_execution_options().get("isolation_level")

    with app.test_request_context("/v1/jobs", method="GET"):
        assert isolation() == "AUTOCOMMIT"
    with app.test_request_context("/v1/jobs", method="POST"):
        assert isolation() is None  # the engine's default: a transaction, committed by hand

"""Inputs that must not hurt the farm: each gets a 4xx JSON error naming the field, and
nothing of the request is stored. Every test runs on SQLite and, when set, PostgreSQL
(where a NUL character used to be a psycopg.DataError and a 500)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from shared.jobspec import MAX_REPORTED_JOBS
from shared.spec import MAX_SCALES, MAX_STYLES
from tests.api.conftest import image_bytes, upload
from tests.engine.patterns import sideways_jpeg


def refused(reply: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """Assert a JSON error with this status (naming `field`); return the error."""
    assert reply.status_code == status, (reply.status_code, reply.data[:500])
    assert reply.is_json
    error = reply.json["error"]
    assert error["status"] == status
    if field is not None:
        assert field in error.get("fields", {}), error
    return error


def post_raw(client: FlaskClient, path: str, body: bytes | str) -> Any:
    return client.post(path, data=body, content_type="application/json")


def nothing_stored(client: FlaskClient) -> None:
    assert client.get("/v1/jobs").json["items"] == []


def test_a_million_invalid_styles_is_refused_at_once_with_a_small_reply(
        client: FlaskClient) -> None:
    body = json.dumps({"content": "0" * 64, "styles": ["x"] * 10**6})
    error = refused(post_raw(client, "/v1/jobs", body), 422, "styles")
    assert error["fields"]["styles"] == [f"at most {MAX_STYLES} items, got 1000000"]
    assert len(json.dumps(error)) < 500  # was a 77 MB error, one message per style


@pytest.mark.parametrize(("params", "field"), [
    ({"style_weights": [1.0] * 10**5}, "params.style_weights"),  # was stored on every job
    ({"style_weights": [0.0]}, "params.style_weights.0"),  # entries are > 0
    ({"iterations": [5] * (MAX_SCALES + 1)}, "params.iterations"),
    ({"size": 48.5}, "params.size"),  # was stored as 48
    ({"size": 48.0}, "params.size"),
    ({"size": "48"}, "params.size"),  # was accepted
    ({"size": True}, "params.size"),
    ({"size": int("9" * 4000)}, "params.size"),
    ({"style_weight": "30"}, "params.style_weight"),
    ({"style_weight": 10**400}, "params.style_weight"),  # float() overflows
    ({"iterations": ["10"]}, "params.iterations.0"),
])
def test_params_are_strict_and_bounded(client: FlaskClient, images: list[str],
                                       params: dict[str, Any], field: str) -> None:
    job = {"content": images[0], "styles": [images[1]], "params": params}
    refused(client.post("/v1/jobs", json=job), 422, field)
    nothing_stored(client)


def test_priority_and_style_weight_are_strict(client: FlaskClient, images: list[str]) -> None:
    refused(client.post("/v1/jobs", json={"content": images[0], "styles": [images[1]],
                                          "priority": "1"}), 422, "priority")
    refused(client.post("/v1/jobs", json={"content": images[0],
                                          "styles": [{"image": images[1], "weight": "2"}]}),
            422, "styles.0.weight")


def test_batch_lists_are_bounded_before_their_items_are_read(
        make_app: Callable[..., Flask]) -> None:
    client = make_app(max_batch_jobs=100).test_client()
    for name in ("contents", "styles"):
        body = {"contents": ["x"] * 10, "styles": ["x"] * 10, name: ["x"] * 101}
        error = refused(client.post("/v1/batches", json=body), 422, name)
        assert "at most 100" in error["fields"][name][0] and len(json.dumps(error)) < 500


def test_a_batch_of_invalid_jobs_reports_a_few(client: FlaskClient) -> None:
    reply = client.post("/v1/batches", json={"jobs": [{"content": "bad"}] * 5000})
    error = refused(reply, 422)
    assert len(error["fields"]) <= 2 * MAX_REPORTED_JOBS
    assert len(reply.data) < 20_000


def test_the_request_body_is_bounded(make_app: Callable[..., Flask], images: list[str]) -> None:
    client = make_app(max_request_bytes=10_000).test_client()
    body = json.dumps({"name": "x" * 20_000, "jobs": []})
    error = refused(post_raw(client, "/v1/batches", body), 413, "body")
    assert "10000 bytes" in error["message"]
    # Uploads keep their own, larger limit.
    assert upload(client, image_bytes(seed=9)).status_code == 201


@pytest.mark.parametrize("body", [
    "[" * 100_000 + "]" * 100_000,  # RecursionError in json.loads
    '{"content": ' + "1" * 5000 + "}",  # int() past sys.get_int_max_str_digits()
    '{"content": "x"',  # plainly broken
    b'{"content": "\xff"}',  # not UTF-8
])
def test_json_that_python_cannot_parse_sanely_is_a_400(client: FlaskClient,
                                                       body: str | bytes) -> None:
    for path in ("/v1/jobs", "/v1/batches"):
        refused(post_raw(client, path, body), 400, "body")


def test_nul_characters_are_refused_everywhere(client: FlaskClient, images: list[str]) -> None:
    for path in ("/v1/jobs/ab%00cd", "/v1/batches/ab%00cd", "/v1/images/ab%00cd",
                 "/v1/images/ab%00cd/file", "/v1/jobs/ab%00cd/result"):
        refused(client.get(path), 404)
    refused(client.post("/v1/jobs/ab%00cd/cancel"), 404)
    refused(client.get("/v1/jobs?batch=ab%00cd"), 422, "batch")
    refused(client.get("/v1/jobs?cursor=ab%00cd"), 422, "cursor")
    job = {"content": images[0], "styles": [images[1]]}
    refused(client.post("/v1/batches", json={"name": "a\x00b", "jobs": [job]}), 422, "name")
    refused(client.post("/v1/jobs", json={**job, "content": "a\x00"}), 422, "content")
    refused(client.post("/v1/jobs", json={**job, "webhook_url": "http://a.example/\x00"}),
            422, "webhook_url")
    refused(client.post("/v1/jobs", json={**job, "params": {"optimizer": "adam\x00"}}),
            422, "params.optimizer")
    nothing_stored(client)


def test_a_cursor_carrying_a_nul_is_refused(client: FlaskClient) -> None:
    from datetime import UTC, datetime

    from api.jobs import encode_cursor

    cursor = encode_cursor(datetime.now(UTC), "a" + chr(0))
    refused(client.get(f"/v1/jobs?cursor={cursor}"), 422, "cursor")


def test_the_recorded_size_of_a_photo_is_upright(client: FlaskClient) -> None:
    reply = upload(client, sideways_jpeg(48, 32), "portrait.jpg")
    assert reply.status_code == 201
    assert (reply.json["width"], reply.json["height"]) == (32, 48)


def test_uploaded_files_are_served_with_a_fixed_type_and_nosniff(client: FlaskClient) -> None:
    image = upload(client, image_bytes(seed=5), "page.html").json
    reply = client.get(image["links"]["file"])
    assert reply.status_code == 200
    assert reply.mimetype == "image/png"  # by what Pillow found, not by the name given
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in reply.headers["Content-Security-Policy"]
    assert client.get("/v1/jobs").headers["X-Content-Type-Options"] == "nosniff"

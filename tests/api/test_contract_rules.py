"""Rules that used to be cross-field 422s the OpenAPI document could not state: each now
has a documented meaning, or is stated in the document and enforced as stated."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from shared.spec import RenderParams, blend_weights, plan_scales, stretch
from tests.api.conftest import image_bytes, upload
from tests.api.test_hostile_inputs import nothing_stored, refused


def job_of(client: FlaskClient, body: dict[str, Any]) -> dict[str, Any]:
    reply = client.post("/v1/jobs", json=body)
    assert reply.status_code == 202, reply.json
    return reply.json


@pytest.mark.parametrize(("style_weights", "own", "expected"), [
    ([0.7, 0.3], [1.0, 1.0], [0.7, 0.3]),
    ([0.7], [1.0, 2.0], [0.7, 2.0]),  # a style without an entry keeps its own weight
    ([0.7, 0.3, 5.0], [1.0, 1.0], [0.7, 0.3]),  # entries past the last style: ignored
    (None, [2.0, 1.0], [2.0, 1.0]),
])
def test_style_weights_of_any_length_fold_into_the_styles(
        client: FlaskClient, images: list[str], style_weights: list[float] | None,
        own: list[float], expected: list[float]) -> None:
    styles = [{"image": image, "weight": weight}
              for image, weight in zip(images[1:3], own, strict=True)]
    job = job_of(client, {"content": images[0], "styles": styles,
                          "params": {"size": 32, "style_weights": style_weights}})
    assert [style["weight"] for style in job["styles"]] == expected
    assert job["params"]["style_weights"] is None  # the styles say what is blended


def test_the_worker_reads_stored_mismatched_weights_by_the_same_rule() -> None:
    assert blend_weights([0.7, 0.3, 1.0] + [1.0] * 10**5, [1.0, 1.0]) == (0.7, 0.3)
    assert blend_weights([0.0, 0.0], [1.0, 3.0]) == (1.0, 3.0)  # nothing to blend: own ones


def test_init_image_implies_init_image_mode(client: FlaskClient, images: list[str]) -> None:
    base = {"content": images[0], "styles": [images[1]]}
    assert job_of(client, {**base, "init_image": images[2],
                           "params": {"init": "noise"}})["params"]["init"] == "image"
    assert job_of(client, {**base, "params": {"init": "image"}})["params"]["init"] == "content"
    batch = client.post("/v1/batches", json={"contents": [images[0]], "styles": [images[1]],
                                             "init_image": images[2]})
    assert batch.status_code == 202
    [job] = client.get(f"/v1/jobs?batch={batch.json['id']}").json["items"]
    assert (job["init_image"], job["params"]["init"]) == (images[2], "image")


def test_iterations_of_any_length_are_stretched_over_the_scales() -> None:
    assert stretch([7, 5, 3], 3) == [7, 5, 3]
    assert stretch([4], 3) == [4, 4, 4]
    assert stretch([100, 10], 4) == [100, 70, 40, 10]  # linear, first and last kept
    assert stretch([9, 1, 9], 5) == [9, 5, 1, 5, 9]
    assert stretch([6, 2], 1) == [6]
    params = RenderParams.from_dict({"size": 256, "min_size": 128, "iterations": [7, 5]})
    assert [s.iterations for s in plan_scales(params, 256, 128)] == [7, 6, 5]


def test_output_sides_are_bounded_by_the_pixel_budget_as_documented(
        make_app: Callable[..., Flask], images: list[str]) -> None:
    client = make_app(max_output_pixels=10_000).test_client()  # sides up to 100 px
    spec = client.get("/v1/openapi.json").json
    properties = spec["components"]["schemas"]["RenderParams"]["properties"]
    assert [properties[name]["maximum"] for name in ("size", "width", "height")] == [100] * 3
    base = {"content": images[0], "styles": [images[1]]}
    assert client.post("/v1/jobs", json={**base, "params": {"size": 100}}).status_code == 202
    assert job_of(client, base)["params"]["size"] == 100  # the default 512, within the bound
    assert properties["size"]["default"] == 100
    refused(client.post("/v1/jobs", json={**base, "params": {"size": 101}}), 422, "params.size")
    refused(client.post("/v1/jobs", json={**base, "params": {"width": 50, "height": 101}}),
            422, "params.height")
    refused(client.post("/v1/jobs", json={**base, "params": {"width": 50}}), 422,
            "params.height")  # both or neither: the document's anyOf


def test_a_content_too_thin_for_the_network_is_rendered_not_refused(
        client: FlaskClient, images: list[str]) -> None:
    thin = upload(client, image_bytes(width=2, height=2000, seed=5)).json["id"]
    job = job_of(client, {"content": thin, "styles": [images[1]], "params": {"size": 48}})
    assert job["status"] == "queued"
    plan = plan_scales(RenderParams(size=48, min_size=32), 2, 2000)
    assert [(s.width, s.height) for s in plan] == [(16, 34), (16, 48)]  # 16 px, resized later


def test_a_batch_is_one_of_two_forms(client: FlaskClient, images: list[str]) -> None:
    job = {"content": images[0], "styles": [images[1]]}
    refused(client.post("/v1/batches", json={"jobs": [job], "contents": [images[0]]}),
            422, "contents")
    refused(client.post("/v1/batches", json={"contents": [images[0]]}), 422, "styles")
    spec = client.get("/v1/openapi.json").json["components"]["schemas"]
    assert [ref["$ref"] for ref in spec["BatchCreate"]["oneOf"]] == [
        "#/components/schemas/BatchOfJobs", "#/components/schemas/BatchOfPairs"]
    assert spec["BatchOfJobs"]["properties"]["jobs"]["maxItems"] == 10_000
    nothing_stored(client)


@pytest.mark.parametrize("url", [
    "http://hooks.example/a\nb", "http://hooks.example/\x01", "ftp://hooks.example/",
    "http://user:pw@hooks.example/", "http://hooks.example:99999/", "http://[::1]/x",
    "http://hooks.example/é",
])
def test_webhook_urls_match_the_documented_pattern(client: FlaskClient, images: list[str],
                                                   url: str) -> None:
    body = {"content": images[0], "styles": [images[1]], "webhook_url": url}
    refused(client.post("/v1/jobs", json=body), 422, "webhook_url")
    nothing_stored(client)


@pytest.mark.parametrize("key", ["a\x01b", "a b", "x" * 201, "é"])
def test_idempotency_keys_outside_the_pattern_are_a_400(client: FlaskClient, images: list[str],
                                                       key: str) -> None:
    reply = client.post("/v1/jobs", json={"content": images[0], "styles": [images[1]]},
                        headers={"Idempotency-Key": key.encode().decode("latin-1")})
    refused(reply, 400, "Idempotency-Key")
    nothing_stored(client)


def test_idempotency_key_is_documented_on_every_post(client: FlaskClient) -> None:
    spec = client.get("/v1/openapi.json").json
    posts = [operations["post"] for operations in spec["paths"].values() if "post" in operations]
    assert len(posts) == 6  # images, jobs, batches, and cancel or retry one
    for post in posts:
        assert {"$ref": "#/components/parameters/IdempotencyKey"} in post["parameters"]
        assert "400" in post["responses"]


def test_a_lone_surrogate_is_a_400(client: FlaskClient, images: list[str]) -> None:
    body = json.dumps({"content": images[0], "styles": [images[1]], "name": "x"})
    body = body.replace('"x"', '"\\ud800"')
    for path in ("/v1/jobs", "/v1/batches"):
        reply = client.post(path, data=body, content_type="application/json")
        refused(reply, 400)
    nothing_stored(client)

"""What the OpenAPI document must say that marshmallow's schemas cannot: the rules that
depend on the farm's settings, and the rules between fields.

The suite runs schemathesis against the served document (tests/api/test_contract.py)
with its default expectations: every request the document allows must be accepted. So
every rule the API enforces is stated here, exactly as enforced:
- size, width and height at most the side of a square of max_output_pixels
  (`shared.spec.max_output_side`, enforced by RenderParamsSchema);
- width and height both or neither (an anyOf);
- a batch is oneOf BatchOfJobs and BatchOfPairs (`shared.jobspec.BatchCreateSchema`), and
  its lists hold at most max_batch_jobs items;
- every POST takes an optional Idempotency-Key of the pattern `api.idempotency` enforces.
What stays in words: contents x styles <= max_batch_jobs (a bound on a product of two
lengths; the exact anyOf would need about 2 x sqrt(max_batch_jobs) branches), and the
rules that depend on state (an image id must have been uploaded; a cursor must come
from this API; a key reused for another request is a 422).
"""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from flask_smorest import Api
from marshmallow import fields as mf
from marshmallow import validate

from api.idempotency import HEADER, KEY_PATTERN, MAX_KEY_LENGTH
from shared.jobspec import BatchOfJobsSchema, BatchOfPairsSchema
from shared.settings import Settings
from shared.spec import max_output_side

_KEY_PARAMETER = {
    "in": "header", "name": HEADER, "required": False,
    "description": "makes the POST safe to repeat: a request repeated with the same key gets "
                   "the first reply back (header Idempotent-Replayed) and creates nothing "
                   "new; the same key with another request is a 422. 1 to "
                   f"{MAX_KEY_LENGTH} printable ASCII characters",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH,
               "pattern": KEY_PATTERN},
}
_BAD_KEY = {"description": f"{HEADER} is not 1 to {MAX_KEY_LENGTH} printable ASCII "
                           "characters (no spaces), or the body is not JSON", "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_TOO_LARGE = {"description": "the body is over STYLEFARM_MAX_REQUEST_BYTES (16 MiB by "
                             "default: room for a 10,000-job batch)", "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def exclusive_bounds(self: Any, field: mf.Field, **_: Any) -> dict[str, Any]:
    """apispec attribute function: `validate.Range(min_inclusive=False)` as OpenAPI 3.0's
    `exclusiveMinimum: true` (apispec drops the exclusivity, so the document allowed
    learning_rate 0.0001 and ema_decay 1.0, which the API refuses)."""
    bounds: dict[str, Any] = {}
    for validator in field.validators:
        if isinstance(validator, validate.Range):
            if validator.min is not None and not validator.min_inclusive:
                bounds["exclusiveMinimum"] = True
            if validator.max is not None and not validator.max_inclusive:
                bounds["exclusiveMaximum"] = True
    return bounds


def closed_keys(self: Any, field: mf.Field, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """apispec attribute function: a Dict whose keys are OneOf(choices) as an object with
    exactly those properties (apispec states only the values, so the document allowed any
    key in style_layer_weights)."""
    if not isinstance(field, mf.Dict) or field.key_field is None:
        return {}
    for validator in field.key_field.validators:
        if isinstance(validator, validate.OneOf):
            value = ret.get("additionalProperties", {})
            return {"properties": {str(key): value for key in validator.choices},
                    "additionalProperties": False}
    return {}


def register(api: Api) -> None:
    """Before the blueprints are registered: field conversions apispec lacks."""
    api.ma_plugin.converter.add_attribute_function(exclusive_bounds)
    api.ma_plugin.converter.add_attribute_function(closed_keys)


def complete(spec: APISpec, settings: Settings) -> None:
    """Add to the registered document what only the settings and cross-field rules say."""
    schemas = spec.components.schemas
    _bound_output(schemas["RenderParams"], max_output_side(settings.max_output_pixels))
    spec.components.schema("BatchOfJobs", schema=BatchOfJobsSchema)
    spec.components.schema("BatchOfPairs", schema=BatchOfPairsSchema)
    limit = settings.max_batch_jobs
    schemas["BatchOfJobs"]["properties"]["jobs"]["maxItems"] = limit
    for name in ("contents", "styles"):
        schemas["BatchOfPairs"]["properties"][name]["maxItems"] = limit
    schemas["BatchCreate"].clear()
    schemas["BatchCreate"].update({
        "description": "either complete jobs, or every content with every style",
        "oneOf": [{"$ref": "#/components/schemas/BatchOfJobs"},
                  {"$ref": "#/components/schemas/BatchOfPairs"}]})
    _link(spec, "/v1/jobs", "202", "job_id", [
        "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/jobs/{job_id}/preview",
        "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/retry"])
    _link(spec, "/v1/batches", "202", "batch_id", [
        "/v1/batches/{batch_id}", "/v1/batches/{batch_id}/cancel"])
    spec.components.parameter("IdempotencyKey", "header", _KEY_PARAMETER)
    for operations in _paths(spec).values():
        post = operations.get("post")
        if post is not None:
            post.setdefault("parameters", []).append(
                {"$ref": "#/components/parameters/IdempotencyKey"})
            post["responses"].setdefault("400", _BAD_KEY)
            if "application/json" in post.get("requestBody", {}).get("content", {}):
                post["responses"].setdefault("413", _TOO_LARGE)


def _bound_output(params: dict[str, Any], side: int) -> None:
    """Sides at most `side`; width and height both or neither (null counts as left out)."""
    for name in ("size", "width", "height"):
        params["properties"][name]["maximum"] = side
    size = params["properties"]["size"]
    size["default"] = min(size["default"], side)  # as RenderParamsSchema fills it in
    left_out = {"nullable": True, "enum": [None]}
    params["anyOf"] = [
        {"required": ["width", "height"],
         "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}}},
        {"properties": {"width": left_out, "height": left_out}},
    ]


def _link(spec: APISpec, path: str, status: str, parameter: str, targets: list[str]) -> None:
    """OpenAPI links from what a POST created to the operations on it (a client, or
    schemathesis' stateful phase, follows them with the id from the reply)."""
    links = {}
    for target in targets:
        for method in ("get", "post"):
            if method in _paths(spec).get(target, {}):
                pointer = target.replace("~", "~0").replace("/", "~1")
                last = target.rsplit("/", 1)[1]
                name = "get" if last.startswith("{") else last  # get, result, cancel...
                links[name] = {"operationRef": f"#/paths/{pointer}/{method}",
                               "parameters": {parameter: "$response.body#/id"}}
    _paths(spec)[path]["post"]["responses"][status]["links"] = links


def _paths(spec: APISpec) -> dict[str, dict[str, Any]]:
    return spec._paths  # apispec keeps the registered paths here; to_dict() serves them

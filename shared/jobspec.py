"""What a client submits: one job, or a batch of them (torch-free marshmallow schemas).

The API validates requests with these schemas and flask-smorest builds the OpenAPI
document from the same classes, so the docs cannot drift from what is enforced.
Render parameters are not redefined here: `params` nests `shared.spec.RenderParamsSchema`.

Loading a schema checks everything but state: whether the images exist is the API's
check (api/submit.py). The bounds that depend on the farm's settings (how many jobs a
batch may hold, the output's sides) are read from context variables the API sets per
request, and api/contract.py writes the same bounds into the OpenAPI document.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    post_load,
    pre_load,
    validate,
)
from marshmallow import fields as mf

from shared.fields import BoundedList, StrictFloat
from shared.spec import MAX_STYLES, RenderParams, RenderParamsSchema, blend_weights

IMAGE_ID = r"^[0-9a-f]{64}$"
NO_NUL = r"^[^\x00]*$"
# A webhook target, as the API accepts it and the OpenAPI document states it: http(s), a
# host name or IPv4 address (DNS labels), a port within 0..65535, then printable ASCII
# (percent-encode anything else). No user:password@, no IPv6 literal: give a name.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
WEBHOOK_URL = rf"^https?://{_LABEL}(?:\.{_LABEL})*\.?(?::{_PORT})?(?:[/?#][!-~]*)?$"
_IMAGE_ID = re.compile(IMAGE_ID)
PRIORITY_MIN, PRIORITY_MAX = -10, 10
DEFAULT_MAX_BATCH_JOBS = 10_000
# A batch with many invalid jobs is answered after this many: the reply stays small.
MAX_REPORTED_JOBS = 20

# The most jobs one batch request may create; the API sets it from its settings per request.
_max_batch_jobs: ContextVar[int] = ContextVar("max_batch_jobs", default=DEFAULT_MAX_BATCH_JOBS)


def set_batch_limit(max_jobs: int) -> None:
    """Set the batch limit for what follows in this context (the API: once per request)."""
    _max_batch_jobs.set(max_jobs)


@contextmanager
def batch_limit(max_jobs: int) -> Iterator[None]:
    """Load BatchCreateSchema with a batch limit other than the default."""
    token = _max_batch_jobs.set(max_jobs)
    try:
        yield
    finally:
        _max_batch_jobs.reset(token)


class _Strict(Schema):
    """Unknown fields are errors: a misspelt parameter must not silently use its default."""

    class Meta:
        unknown = RAISE


def image_id(**kwargs: Any) -> mf.String:
    return mf.String(
        validate=validate.Regexp(IMAGE_ID, error="not an image id (64 lowercase hex digits)"),
        metadata={"description": "id of an uploaded image (sha256 of its bytes), from "
                                 "POST /v1/images"},
        **kwargs,
    )


def webhook_url() -> mf.String:
    return mf.String(
        allow_none=True, load_default=None,
        validate=[validate.Length(max=2000),
                  validate.Regexp(WEBHOOK_URL, error="not an http(s) URL of a host name or "
                                                     "IPv4 address, in printable ASCII")],
        metadata={"description": "POSTed a JSON summary when the job (or batch) finishes. "
                                 "Where it leads is checked when the worker posts: a target "
                                 "the farm must not reach is a failed delivery",
                  "pattern": WEBHOOK_URL},
    )


def batch_name() -> mf.String:
    """Free text, but no NUL (the API refuses NUL in every string; PostgreSQL cannot store
    one): the pattern says so in the document, as for every other string field."""
    return mf.String(load_default="", validate=[
        validate.Length(max=200), validate.Regexp(NO_NUL, error="contains a NUL character")],
        metadata={"pattern": NO_NUL, "description": "for people; up to 200 characters"})


def priority(**kwargs: Any) -> mf.Integer:
    return mf.Integer(
        strict=True, validate=validate.Range(PRIORITY_MIN, PRIORITY_MAX),
        metadata={"description": f"{PRIORITY_MIN}..{PRIORITY_MAX}; higher runs sooner"},
        **kwargs,
    )


class StyleRefSchema(_Strict):
    image = image_id(required=True)
    weight = StrictFloat(
        load_default=1.0,
        validate=validate.Range(0, 1e6, min_inclusive=False),
        metadata={"description": "relative weight of this style (> 0); weights are normalised"},
    )


class StyleRef(mf.Field):
    """A style: `{"image": id, "weight": w}`, or a bare image id meaning weight 1."""

    def __init__(self, **kwargs: Any) -> None:
        one_of = [
            {"type": "string", "pattern": IMAGE_ID},
            {"type": "object", "required": ["image"], "additionalProperties": False,
             "properties": {"image": {"type": "string", "pattern": IMAGE_ID},
                            "weight": {"type": "number", "minimum": 0,
                                       "exclusiveMinimum": True, "maximum": 1e6,
                                       "default": 1.0}}},
        ]
        super().__init__(metadata={"oneOf": one_of}, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> dict[str, Any]:
        if isinstance(value, str):
            value = {"image": value}
        if not isinstance(value, Mapping):
            raise ValidationError("a style is an image id or {\"image\": id, \"weight\": w}")
        return StyleRefSchema().load(value)


def styles_field() -> mf.List:
    return BoundedList(StyleRef(), required=True, validate=validate.Length(min=1, max=MAX_STYLES),
                       metadata={"description": f"style images and their weights (1 to "
                                                f"{MAX_STYLES})"})


def _default_params() -> RenderParams:
    """Params left out: loaded from nothing, so that the defaults follow this farm's bounds."""
    return RenderParamsSchema().load({})


def params_field(**kwargs: Any) -> mf.Nested:
    return mf.Nested(RenderParamsSchema, metadata={"description": "render parameters; "
                     "any left out take their defaults"}, **kwargs)


def _init_mode(params: RenderParams, init_image: str | None) -> RenderParams:
    """An init_image means params.init = "image"; "image" without one starts from the
    content. No combination of the two is refused."""
    if init_image and params.init != "image":
        return dataclasses.replace(params, init="image")
    if not init_image and params.init == "image":
        return dataclasses.replace(params, init="content")
    return params


def _normalise(job: dict[str, Any]) -> dict[str, Any]:
    """A job with one meaning for the fields that could contradict each other: the init
    mode follows init_image, and params.style_weights (deprecated) is folded into
    styles[].weight by `shared.spec.blend_weights` and stored as null, so the styles say
    what is blended, whatever the number of entries."""
    params = _init_mode(job["params"], job.get("init_image"))
    if params.style_weights is not None:
        styles = job["styles"]
        weights = blend_weights(params.style_weights, [style["weight"] for style in styles])
        job["styles"] = [{**style, "weight": weight}
                         for style, weight in zip(styles, weights, strict=True)]
        params = dataclasses.replace(params, style_weights=None)
    job["params"] = params
    return job


class JobCreateSchema(_Strict):
    """One render: a content image, one or more weighted styles, render parameters."""

    content = image_id(required=True)
    styles = styles_field()
    init_image = image_id(allow_none=True, load_default=None)
    params = params_field(load_default=_default_params)
    priority = priority(load_default=0)
    webhook_url = webhook_url()

    @post_load
    def _one_meaning(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return _normalise(data)


class JobList(mf.List):
    """A list of JobCreate objects that validates each distinct job shape once.

    A 10,000-job batch usually repeats a few styles and parameter sets over many
    content images; running the full schema (RenderParams included) on each job costs
    seconds. Jobs that differ only in `content` share one validated result, and only
    their content id is checked on its own. Anything unusual goes through the full
    schema, so error messages are exactly the schema's.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(mf.Nested(JobCreateSchema), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise ValidationError("not a list of jobs")
        schema = JobCreateSchema()
        seen: dict[str, dict[str, Any]] = {}
        loaded: list[dict[str, Any]] = []
        errors: dict[int, Any] = {}
        for index, job in enumerate(value):
            if len(errors) >= MAX_REPORTED_JOBS:
                break  # enough to act on; validating the rest would only cost time
            if not isinstance(job, Mapping):
                errors[index] = {"_schema": ["a job is an object"]}
                continue
            content = job.get("content")
            rest = {k: v for k, v in job.items() if k != "content"}
            try:
                key = json.dumps(rest, sort_keys=True)
            except (TypeError, ValueError):
                key = None
            shape = seen.get(key) if key is not None else None
            if shape is not None and isinstance(content, str) and _IMAGE_ID.match(content):
                loaded.append({**shape, "content": content})
                continue
            try:
                result = schema.load(job)
            except ValidationError as exc:
                errors[index] = exc.messages
                continue
            if key is not None:
                seen[key] = {k: v for k, v in result.items() if k != "content"}
            loaded.append(result)
        if errors:
            raise ValidationError(errors)
        return loaded


def _over_limit(items: Any, name: str) -> None:
    """Refuse a list over the batch limit before validating 100,000 items one by one."""
    limit = _max_batch_jobs.get()
    if isinstance(items, list) and len(items) > limit:
        raise ValidationError(f"at most {limit} jobs per batch, got {len(items)} {name}", name)


class BatchOfJobsSchema(_Strict):
    """A batch of complete jobs, each with its own images, params and priority."""

    name = batch_name()
    webhook_url = webhook_url()
    jobs = JobList(required=True, validate=validate.Length(min=1),
                   metadata={"description": "complete jobs, at most max_batch_jobs"})

    @pre_load
    def _limit(self, data: Any, **_: Any) -> Any:
        if isinstance(data, Mapping):
            _over_limit(data.get("jobs"), "jobs")
        return data


class BatchOfPairsSchema(_Strict):
    """Every content image with every style, all with the same params and priority.

    Each job has one style, so params.style_weights has nothing to blend there. The
    product contents x styles is at most max_batch_jobs (a rule between two lists' lengths
    that the OpenAPI document states in words; each list alone has its maxItems)."""

    name = batch_name()
    webhook_url = webhook_url()
    contents = mf.List(image_id(), required=True, validate=validate.Length(min=1),
                       metadata={"description": "content images, each rendered with every style "
                                                "(contents x styles: at most max_batch_jobs)"})
    styles = mf.List(StyleRef(), required=True, validate=validate.Length(min=1),
                     metadata={"description": "styles: each one is a job of its own with every "
                                              "content image"})
    init_image = image_id(allow_none=True, load_default=None)
    params = params_field(load_default=_default_params)
    priority = priority(load_default=0)

    @pre_load
    def _limit(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        contents, styles = data.get("contents"), data.get("styles")
        _over_limit(contents, "contents")
        _over_limit(styles, "styles")
        limit = _max_batch_jobs.get()
        if isinstance(contents, list) and isinstance(styles, list):
            count = len(contents) * len(styles)
            if count > limit:
                raise ValidationError(
                    f"at most {limit} jobs per batch: {len(contents)} contents x "
                    f"{len(styles)} styles = {count}", "contents")
        return data

    @post_load
    def _one_meaning(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        params = _init_mode(data["params"], data.get("init_image"))
        data["params"] = dataclasses.replace(params, style_weights=None)
        return data


class BatchCreateSchema(Schema):
    """A batch: oneOf BatchOfJobs and BatchOfPairs (the OpenAPI document says so, see
    api/contract.py). The two are exclusive, each refusing the other's fields, so the
    presence of `jobs` picks the one that can match."""

    def load(self, data: Any, *, many: bool | None = None, partial: Any = None,
             unknown: str | None = None) -> Any:
        if not isinstance(data, Mapping):
            raise ValidationError({"_schema": ["a batch is a JSON object"]})
        schema = BatchOfJobsSchema() if "jobs" in data else BatchOfPairsSchema()
        return schema.load(data)


def expand_batch(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The batch's jobs as JobCreate dicts, for either form (every content × every style).

    The pairs form shares one `RenderParams` object across its jobs: it is validated,
    and later serialised, once.
    """
    if "jobs" in data:
        return list(data["jobs"])
    shared = {"init_image": data["init_image"], "params": data["params"],
              "priority": data["priority"], "webhook_url": None}
    return [{"content": content, "styles": [style], **shared}
            for content in data["contents"] for style in data["styles"]]


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested error dict as dotted paths: {"params.size": ["..."]}.

    Clients (and people) read `jobs.3.params.size` more easily than five nested objects.
    """
    flat: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            name = prefix if key == "_schema" and prefix else (
                f"{prefix}.{key}" if prefix else str(key))
            for k, v in flatten_errors(value, name).items():
                flat.setdefault(k, []).extend(v)
    elif isinstance(messages, list | tuple):
        if all(isinstance(m, str) for m in messages):
            flat[prefix or "_schema"] = list(messages)
        else:
            for item in messages:
                for k, v in flatten_errors(item, prefix).items():
                    flat.setdefault(k, []).extend(v)
    else:
        flat[prefix or "_schema"] = [str(messages)]
    return flat

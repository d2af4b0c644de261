"""What a client submits: one job, or a batch of them (torch-free marshmallow schemas).

The API validates requests with these schemas and flask-smorest builds the OpenAPI
document from the same classes, so the docs cannot drift from what is enforced.
Render parameters are not redefined here: `params` nests `shared.spec.RenderParamsSchema`.

Loading a schema checks shapes only. Whether the images exist, whether the output
is too large, and how many jobs a batch may hold depend on the database and the
settings; the API checks those (see api/submit.py).
"""

from __future__ import annotations

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
    validates_schema,
)
from marshmallow import fields as mf

from shared.fields import BoundedList, StrictFloat
from shared.spec import MAX_STYLES, RenderParams, RenderParamsSchema

IMAGE_ID = r"^[0-9a-f]{64}$"
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


def webhook_url() -> mf.URL:
    return mf.URL(
        schemes={"http", "https"}, require_tld=False, allow_none=True, load_default=None,
        validate=validate.Length(max=2000),
        metadata={"description": "POSTed a JSON summary when the job (or batch) finishes",
                  "pattern": r"^https?://[^\s/?#]+([/?#]\S*)?$"},
    )


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


def params_field(**kwargs: Any) -> mf.Nested:
    return mf.Nested(RenderParamsSchema, metadata={"description": "render parameters; "
                     "any left out take their defaults"}, **kwargs)


def _check_job(data: Mapping[str, Any], n_styles: int) -> None:
    """The rules between a job's fields: init image and init mode, one weight per style."""
    params: RenderParams | None = data.get("params")
    init_image = data.get("init_image")
    if params is None:
        return
    weights = params.style_weights
    if weights is not None:
        if len(weights) != n_styles:
            raise ValidationError(
                f"{len(weights)} weights for {n_styles} style image(s): give one per style, "
                f"or give each style's weight in styles[].weight", "params.style_weights")
        if not any(weight > 0 for weight in weights):
            raise ValidationError("at least one weight must be above 0", "params.style_weights")
    if params.init == "image" and not init_image:
        raise ValidationError("params.init is 'image': give init_image", "init_image")
    if init_image and params.init != "image":
        raise ValidationError("an init_image needs params.init = 'image'", "init_image")


class JobCreateSchema(_Strict):
    """One render: a content image, one or more weighted styles, render parameters."""

    content = image_id(required=True)
    styles = styles_field()
    init_image = image_id(allow_none=True, load_default=None)
    params = params_field(load_default=RenderParams)
    priority = priority(load_default=0)
    webhook_url = webhook_url()

    @validates_schema
    def _together(self, data: dict[str, Any], **_: Any) -> None:
        _check_job(data, len(data.get("styles") or ()))


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


class BatchCreateSchema(_Strict):
    """Many jobs at once: either `jobs` (each complete), or `contents` × `styles`.

    In the second form every content image is rendered with every style, all with the
    same `params` and `priority`.
    """

    name = mf.String(load_default="", validate=validate.Length(max=200))
    webhook_url = webhook_url()
    jobs = JobList(validate=validate.Length(min=1),
                   metadata={"description": "complete jobs (give this, or contents and styles)"})
    contents = mf.List(image_id(), validate=validate.Length(min=1),
                       metadata={"description": "content images, each rendered with every style "
                                                "(contents x styles: at most max_batch_jobs)"})
    styles = mf.List(StyleRef(), validate=validate.Length(min=1),
                     metadata={"description": "styles: each one is a job of its own with every "
                                              "content image"})
    init_image = image_id(allow_none=True)
    params = params_field()
    priority = priority()

    @pre_load
    def _limit(self, data: Any, **_: Any) -> Any:
        """Refuse an oversized batch before validating 100,000 jobs one by one."""
        if not isinstance(data, Mapping):
            return data
        limit = _max_batch_jobs.get()
        jobs, contents, styles = data.get("jobs"), data.get("contents"), data.get("styles")
        if isinstance(jobs, list) and len(jobs) > limit:
            raise ValidationError(f"at most {limit} jobs per batch, got {len(jobs)}", "jobs")
        for name, items in (("contents", contents), ("styles", styles)):
            if isinstance(items, list) and len(items) > limit:
                raise ValidationError(f"at most {limit} jobs per batch, got {len(items)} {name}",
                                      name)
        if isinstance(contents, list) and isinstance(styles, list):
            count = len(contents) * len(styles)
            if count > limit:
                raise ValidationError(
                    f"at most {limit} jobs per batch: {len(contents)} contents x "
                    f"{len(styles)} styles = {count}", "contents")
        return data

    @validates_schema
    def _one_form(self, data: dict[str, Any], **_: Any) -> None:
        if "jobs" in data:
            for name in ("contents", "styles", "init_image", "params", "priority"):
                if name in data:
                    raise ValidationError(
                        "give either jobs, or contents and styles with shared params and "
                        "priority, not both", name)
            return
        for name in ("contents", "styles"):
            if name not in data:
                raise ValidationError("give jobs, or contents and styles", name)
        # Each job of the pairs form has one style of its own.
        _check_job({"params": data.get("params", RenderParams()),
                    "init_image": data.get("init_image")}, 1)

    @post_load
    def _defaults(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if "jobs" not in data:
            data.setdefault("params", RenderParams())
            data.setdefault("priority", 0)
            data.setdefault("init_image", None)
        return data


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

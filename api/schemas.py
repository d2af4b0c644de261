"""Response and query-string schemas: they document the API in OpenAPI and shape replies.

Request bodies are `shared.jobspec` (JobCreate, BatchCreate): the same schemas that
validate them produce their OpenAPI definitions.
"""

from __future__ import annotations

from marshmallow import RAISE, Schema, validate
from marshmallow import fields as mf

from shared.models import Status

STATUSES = tuple(s.value for s in Status)
BATCH_ID = r"^[0-9a-f]{32}$"  # shared.models.new_id


class _Out(Schema):
    class Meta:
        ordered = True


class ImageOutSchema(_Out):
    id = mf.String(metadata={"description": "sha256 of the image's bytes"})
    width = mf.Integer()
    height = mf.Integer()
    format = mf.String(metadata={"description": "JPEG, PNG, WEBP, ..."})
    byte_size = mf.Integer()
    links = mf.Dict(keys=mf.String(), values=mf.String())


class UploadSchema(Schema):
    file = mf.Raw(required=True, metadata={"type": "string", "format": "binary",
                                           "description": "the image file"})


class JobLinksSchema(_Out):
    self = mf.String()
    result = mf.String(allow_none=True, metadata={"description": "set once the job succeeded"})
    preview = mf.String(allow_none=True,
                        metadata={"description": "set once the worker wrote a preview"})
    batch = mf.String(allow_none=True)
    cancel = mf.String(allow_none=True, metadata={"description": "set while the job is active"})
    retry = mf.String(allow_none=True,
                      metadata={"description": "set when the job failed or was canceled"})


class StyleOutSchema(_Out):
    image = mf.String()
    weight = mf.Float()


class JobOutSchema(_Out):
    id = mf.String()
    status = mf.String(metadata={"enum": list(STATUSES)})
    progress = mf.Float(metadata={"description": "0..1 over the whole schedule"})
    scale = mf.Integer(allow_none=True, metadata={"description": "current scale, 0-based"})
    scale_count = mf.Integer(allow_none=True)
    iteration = mf.Integer(allow_none=True, metadata={"description": "within the scale"})
    loss = mf.Float(allow_none=True)
    eta_seconds = mf.Float(allow_none=True, metadata={
        "description": "estimated seconds left, from progress and running time; null when "
                       "unknown (queued, or no progress yet)"})
    created_at = mf.AwareDateTime()
    started_at = mf.AwareDateTime(allow_none=True)
    finished_at = mf.AwareDateTime(allow_none=True)
    attempts = mf.Integer()
    worker = mf.String(allow_none=True)
    error = mf.String(allow_none=True)
    batch_id = mf.String(allow_none=True)
    content = mf.String()
    styles = mf.List(mf.Nested(StyleOutSchema))
    init_image = mf.String(allow_none=True)
    params = mf.Dict(metadata={"description": "render parameters (RenderParams), defaults "
                                              "filled in"})
    priority = mf.Integer()
    webhook_url = mf.String(allow_none=True)
    links = mf.Nested(JobLinksSchema)


class JobPageSchema(_Out):
    items = mf.List(mf.Nested(JobOutSchema))
    next = mf.String(allow_none=True, metadata={"description": "the next page, null at the end"})


class JobListArgsSchema(Schema):
    class Meta:
        unknown = RAISE

    batch = mf.String(validate=validate.Regexp(BATCH_ID, error="not a batch id (32 lowercase "
                                                               "hex digits)"),
                      metadata={"description": "only this batch's jobs", "pattern": BATCH_ID})
    status = mf.String(validate=validate.OneOf(STATUSES))
    limit = mf.Integer(load_default=50, validate=validate.Range(1, 1000))
    cursor = mf.String(validate=validate.Length(min=1, max=200),
                       metadata={"description": "from the `next` link of the previous page"})


class BatchLinksSchema(_Out):
    self = mf.String()
    jobs = mf.String()
    cancel = mf.String()


class BatchOutSchema(_Out):
    id = mf.String()
    name = mf.String()
    created_at = mf.AwareDateTime()
    webhook_url = mf.String(allow_none=True)
    job_count = mf.Integer()
    counts = mf.Dict(keys=mf.String(), values=mf.Integer(),
                     metadata={"description": "jobs per status (every status listed)"})
    finished = mf.Boolean(metadata={"description": "true when no job is active any more"})
    progress = mf.Float(metadata={"description": "mean over jobs; finished jobs count as 1"})
    eta_seconds = mf.Float(allow_none=True)
    links = mf.Nested(BatchLinksSchema)


class CancelOutSchema(_Out):
    changed = mf.Integer(metadata={"description": "jobs canceled or asked to stop"})
    batch = mf.Nested(BatchOutSchema)


class HealthSchema(_Out):
    status = mf.String(metadata={"enum": ["ok", "unavailable"]})
    database = mf.Dict()
    redis = mf.Dict()

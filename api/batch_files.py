"""/v1/batches/{id}/sheet and /archive: a batch's results as one picture, or one zip."""

from __future__ import annotations

from typing import Any

from flask import Response, send_file, stream_with_context
from flask.views import MethodView
from marshmallow import RAISE, Schema, fields, validate

from api import archive, sheets
from api.batches import get_batch
from api.context import db, storage
from api.parsing import Blueprint

blp = Blueprint("batch-files", __name__, url_prefix="/v1/batches",
                description="A batch's results together: a contact sheet, a zip.")


class SheetArgsSchema(Schema):
    cell = fields.Integer(load_default=160,
                          validate=validate.Range(min=sheets.MIN_CELL, max=sheets.MAX_CELL),
                          metadata={"description": "largest side of a cell in pixels; "
                                                   "smaller for large batches, so that the "
                                                   "sheet stays within 16 megapixels"})


@blp.route("/<batch_id>/sheet")
class BatchSheet(MethodView):
    @blp.arguments(SheetArgsSchema, location="query", unknown=RAISE)
    @blp.response(200, content_type="image/png",
                  description="one cell per job in submission order, labelled content×style "
                              "(the first hex digits of their image ids); unfinished jobs "
                              "show their status")
    @blp.alt_response(404, description="no such batch")
    def get(self, args: dict[str, Any], batch_id: str) -> Any:
        """A contact sheet of the batch's results, cached until the batch changes."""
        batch = get_batch(batch_id)
        path = sheets.sheet(db(), storage(), batch.id, args["cell"])
        return send_file(path, mimetype="image/png", conditional=True, etag=path.stem,
                         max_age=0)


@blp.route("/<batch_id>/archive")
class BatchArchive(MethodView):
    @blp.response(200, content_type="application/zip",
                  description="results/<content>__<style>__<job>.png for each succeeded job, "
                              "and manifest.json (every job: inputs, params, status, "
                              "timings, attempts)")
    @blp.alt_response(404, description="no such batch")
    def get(self, batch_id: str) -> Any:
        """Every result of the batch in one zip, streamed as it is written."""
        batch = get_batch(batch_id)
        body = stream_with_context(archive.stream(db(), storage(), batch.id))
        reply = Response(body, mimetype="application/zip")
        reply.headers["Content-Disposition"] = f'attachment; filename="batch-{batch.id}.zip"'
        return reply

"""One JSON error shape for every failure the API can answer with.

    {"error": {"status": 422, "message": "...", "fields": {"params.size": ["..."]}}}

`fields` (dotted paths into the request: body fields, query parameters, headers) is
present only when particular inputs are at fault. Clients parse one shape; nobody
ever gets an HTML page or a traceback, whatever went wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, has_request_context, jsonify, request
from marshmallow import Schema
from marshmallow import fields as mf
from werkzeug.exceptions import HTTPException

from shared.jobspec import flatten_errors

log = logging.getLogger(__name__)

# An error reply stays small whatever the request was: the first fields at fault, the
# first messages of each, each message cut short.
MAX_FIELDS = 50
MAX_MESSAGES = 5
MAX_MESSAGE_CHARS = 500


class ApiError(Exception):
    """Raised by views: becomes an error response with this status, message and fields."""

    def __init__(self, status: int, message: str, fields: Mapping[str, list[str]] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = dict(fields) if fields else None
        self.headers = dict(headers) if headers else {}


class ErrorBodySchema(Schema):
    status = mf.Integer(metadata={"description": "the HTTP status, repeated"})
    message = mf.String(metadata={"description": "what went wrong, for people"})
    fields = mf.Dict(keys=mf.String(), values=mf.List(mf.String()),
                     metadata={"description": "dotted input path -> messages, e.g. "
                                              "params.size, styles.0.image, cursor"})


class ErrorSchema(Schema):
    """The error document (also what flask-smorest lists for 4xx responses in OpenAPI)."""

    error = mf.Nested(ErrorBodySchema)


def error_response(status: int, message: str, fields: Mapping[str, list[str]] | None = None,
                   headers: Mapping[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"status": status, "message": message[:MAX_MESSAGE_CHARS]}
    if fields:
        body["fields"] = bounded(fields)
    response = jsonify({"error": body})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def bounded(fields: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """At most MAX_FIELDS fields, MAX_MESSAGES messages each, MAX_MESSAGE_CHARS per message;
    a `_more` entry says how many fields were left out."""
    kept = {name[:MAX_MESSAGE_CHARS]: [str(m)[:MAX_MESSAGE_CHARS] for m in messages[:MAX_MESSAGES]]
            for name, messages in list(fields.items())[:MAX_FIELDS]}
    if len(fields) > MAX_FIELDS:
        kept["_more"] = [f"{len(fields) - MAX_FIELDS} more fields are at fault"]
    return kept


def _validation_fields(messages: Any) -> dict[str, list[str]]:
    """webargs nests messages under the location ("json", "query", "files"): drop that level."""
    if isinstance(messages, Mapping) and messages and all(
            key in {"json", "query", "files", "form", "headers", "view_args", "querystring"}
            for key in messages):
        merged: dict[str, list[str]] = {}
        for inner in messages.values():
            for key, value in flatten_errors(inner).items():
                merged.setdefault(key, []).extend(value)
        return merged
    return flatten_errors(messages)


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    fields = None
    message = error.description or error.name
    if "messages" in data:  # request validation (webargs/flask-smorest): always 422 here
        fields = _validation_fields(data["messages"])
        message = "the request is invalid: see fields"
        if status == 400 and fields:
            status = 422
    if status == 413 and has_request_context():
        message = f"the request body is over the limit of {request.max_content_length} bytes"
        fields = {"body": ["too large"]}
    # Keep headers that mean something (Allow on a 405, WWW-Authenticate...), not its HTML type.
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    headers.update(data.get("headers") or {})
    return error_response(status, message, fields, headers)


def handle_api_error(error: ApiError) -> Response:
    return error_response(error.status, error.message, error.fields, error.headers)


def handle_unexpected(error: Exception) -> Response:
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    log.exception("unhandled error in a request", exc_info=error)
    return error_response(500, "internal error: it has been logged")


def register(app: Flask) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)

"""Reading requests without letting them hurt the API: body size, JSON, NUL characters.

Everything here runs before a request reaches its schema, and answers 4xx with the one
JSON error shape:
- a JSON body is held to `max_request_bytes` (uploads to `max_upload_bytes`): 413;
- JSON that Python cannot parse sanely (nested thousands deep, an integer of thousands
  of digits) is a 400, not a RecursionError or ValueError that would be a 500;
- a NUL character in a path segment, a query parameter or a JSON string is refused:
  nothing in this API means NUL, and PostgreSQL refuses it (psycopg.DataError).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from flask import request
from flask_smorest import Blueprint as _Blueprint
from webargs.core import missing
from webargs.flaskparser import FlaskParser, is_json_request

from api.context import settings
from api.errors import ApiError

NUL = "\x00"
_NUL_ESCAPE = b"\\u0000"  # how a NUL can appear in valid JSON (a raw one is invalid)
# How a surrogate can appear in valid JSON: "\ud800" alone parses to a str that is not
# Unicode text, which no database driver can encode (a 500 before this check).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def limit_body() -> None:
    """before_request: JSON bodies get their own, smaller, limit than file uploads."""
    if request.mimetype != "multipart/form-data":
        request.max_content_length = settings().max_request_bytes


def refuse_nul() -> None:
    """before_request: no NUL in path parameters (404: no such thing) or query strings."""
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str) and NUL in value:
            raise ApiError(404, f"no such resource: {name} contains a NUL character",
                           {name: ["contains a NUL character"]})
    for name, value in request.args.items(multi=True):
        if NUL in name or NUL in value:
            raise ApiError(422, "query parameters must not contain NUL characters",
                           {name.replace(NUL, "\\0"): ["contains a NUL character"]})


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, string) of every key and string in a parsed JSON document.

    Iterative: the document may be nested as deep as the parser allowed."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, str):
            yield at, node
        elif isinstance(node, dict):
            for key, item in node.items():
                inner = f"{at}.{key}" if at else str(key)
                yield inner, key
                stack.append((item, inner))
        elif isinstance(node, list):
            stack.extend((item, f"{at}.{n}" if at else str(n)) for n, item in enumerate(node))


def load_json(raw: bytes) -> Any:
    """Parse a request body as JSON, or raise an ApiError (400 or 422) saying why."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ApiError(400, "the JSON body is nested too deeply",
                       {"body": ["nested too deeply"]}) from None
    except UnicodeDecodeError:
        raise ApiError(400, "the JSON body is not UTF-8", {"body": ["not UTF-8"]}) from None
    except ValueError as exc:  # JSONDecodeError, and int() over sys.get_int_max_str_digits()
        raise ApiError(400, f"the body is not valid JSON: {str(exc)[:200]}",
                       {"body": ["not valid JSON"]}) from None
    if _SURROGATE_ESCAPE.search(raw):
        for path, text in _strings(data):
            if _SURROGATE.search(text):
                raise ApiError(400, "the JSON body is not Unicode text: a lone surrogate "
                                    "escape", {_printable(path): ["contains a lone surrogate"]})
    if _NUL_ESCAPE in raw:
        for path, text in _strings(data):
            if NUL in text:
                raise ApiError(422, "text must not contain NUL characters",
                               {_printable(path): ["contains a NUL character"]})
    return data


def _printable(path: str) -> str:
    """A field path fit for the error reply (itself JSON that must encode)."""
    return _SURROGATE.sub("?", path.replace(NUL, "\\0")) or "body"


class SafeParser(FlaskParser):
    """webargs' Flask parser, reading JSON with `load_json` (webargs catches only
    JSONDecodeError, so the other failures of `json.loads` would be 500s)."""

    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req):
            return missing
        raw = req.get_data(cache=True)
        if not raw:
            return missing
        return load_json(raw)


class Blueprint(_Blueprint):
    """flask-smorest's Blueprint, parsing arguments with `SafeParser`."""

    ARGUMENTS_PARSER = SafeParser()

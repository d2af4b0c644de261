"""POST /v1/images (upload) and GET /v1/images/{id}[/file]: content-addressed inputs.

An upload is checked with Pillow before anything is stored: its header size first
(so a decompression bomb is refused before a single pixel is decoded), then a full
decode (so a truncated file is refused now, not hours later on a GPU).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from flask import request, send_file
from flask.views import MethodView
from PIL import ExifTags
from PIL import Image as PILImage
from sqlalchemy.exc import IntegrityError

from api import idempotency
from api.context import db, settings, storage
from api.errors import ApiError
from api.parsing import Blueprint
from api.schemas import ImageOutSchema, UploadSchema
from shared.models import Image
from shared.storage import sha256_hex

blp = Blueprint("images", __name__, url_prefix="/v1/images",
                description="Upload content, style and init images (shared by everyone: "
                            "an image's id is the sha256 of its bytes).")

# EXIF orientations that turn the picture a quarter: its upright width is the stored height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp",
           "TIFF": "image/tiff", "GIF": "image/gif", "MPO": "image/jpeg"}


def image_view(image: Image) -> dict[str, Any]:
    return {"id": image.id, "width": image.width, "height": image.height,
            "format": image.format, "byte_size": image.byte_size,
            "links": {"self": f"/v1/images/{image.id}", "file": f"/v1/images/{image.id}/file"}}


def inspect(data: bytes, max_pixels: int) -> tuple[int, int, str]:
    """(width, height, format) of a complete, decodable image within the pixel limit.

    The size is the upright one, after the EXIF orientation that the worker applies when
    it decodes the image (worker/engine/images.py), so output sizes are planned on it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            image = PILImage.open(io.BytesIO(data))
    except PILImage.DecompressionBombError as exc:
        raise ApiError(413, f"the image has too many pixels: {exc}") from None
    except Exception:
        raise ApiError(415, "not an image that can be read (JPEG, PNG, WebP, BMP, TIFF, GIF)",
                       {"file": ["not a supported image"]}) from None
    with image:
        width, height = image.size
        if image.format not in FORMATS:
            raise ApiError(415, f"unsupported image format {image.format}",
                           {"file": [f"{image.format} is not one of {sorted(FORMATS)}"]})
        if width * height > max_pixels:
            raise ApiError(413, f"the image is {width}x{height} = {width * height} pixels, over "
                                f"the limit of {max_pixels}", {"file": ["too many pixels"]})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
                image.load()
            if image.getexif().get(ExifTags.Base.Orientation, 1) in _QUARTER_TURNS:
                width, height = height, width
        except Exception as exc:
            raise ApiError(422, f"the image is truncated or corrupt: {exc}",
                           {"file": ["truncated or corrupt"]}) from None
        return width, height, image.format


@blp.route("")
class Images(MethodView):
    @blp.arguments(UploadSchema, location="files")
    @blp.response(201, ImageOutSchema, description="stored")
    @blp.alt_response(200, schema=ImageOutSchema, description="these bytes were stored already")
    @blp.alt_response(413, description="over max_upload_bytes or max_input_pixels")
    @blp.alt_response(415, description="not an image")
    @blp.alt_response(422, description="truncated or corrupt image")
    @idempotency.idempotent
    def post(self, files: dict[str, Any]) -> Any:
        """Upload an image (multipart/form-data, field `file`)."""
        extra = sorted((set(request.form) | set(request.files)) - {"file"})
        if extra:
            raise ApiError(422, "unknown form fields: send only `file`",
                           {name: ["unknown field"] for name in extra})
        upload = files["file"]
        limit = settings().max_upload_bytes
        data = upload.stream.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, f"the file is over the limit of {limit} bytes",
                           {"file": ["too large"]})
        if not data:
            raise ApiError(422, "the file is empty", {"file": ["empty"]})
        width, height, fmt = inspect(data, settings().max_input_pixels)
        digest = sha256_hex(data)
        session = db()
        image = session.get(Image, digest)
        status = 200
        if image is None:
            storage().put_image(data)
            image = Image(id=digest, width=width, height=height, format=fmt,
                          byte_size=len(data))
            session.add(image)
            status = 201
        body = image_view(image)
        try:
            idempotency.commit(session, status, body)
        except IntegrityError:  # the same bytes uploaded at the same moment: one row, fine
            session.rollback()
            image = session.get(Image, digest)
            if image is None:
                raise
            status, body = 200, image_view(image)
        return body, status


@blp.route("/<image_id>")
class ImageItem(MethodView):
    @blp.response(200, ImageOutSchema)
    @blp.alt_response(404, description="no such image")
    def get(self, image_id: str) -> Any:
        """An image's size and format."""
        return image_view(_get(image_id))


@blp.route("/<image_id>/file")
class ImageFile(MethodView):
    @blp.response(200, content_type="image/*", description="the uploaded bytes")
    @blp.alt_response(404, description="no such image")
    def get(self, image_id: str) -> Any:
        """The uploaded file itself."""
        image = _get(image_id)
        # The type comes from our own list, by the format Pillow found at upload, never from
        # the client; nosniff (set on every reply) and the sandbox keep a browser from
        # running a file that is also HTML or script as anything but an image.
        response = send_file(storage().image_path(image.id),
                             mimetype=FORMATS.get(image.format, "application/octet-stream"),
                             conditional=True, etag=image.id, max_age=31_536_000)
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return response


def _get(image_id: str) -> Image:
    image = db().get(Image, image_id)
    if image is None:
        raise ApiError(404, f"no image with id {image_id}")
    return image

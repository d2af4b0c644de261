"""Uploads: content addressing, and every way an upload can be refused (never with a 500)."""

from __future__ import annotations

import hashlib
import io

from flask.testing import FlaskClient
from PIL import Image as PILImage

from tests.api.conftest import image_bytes, upload


def _error(reply, status: int) -> dict:
    assert reply.status_code == status, reply.get_data(as_text=True)
    assert reply.is_json, reply.get_data(as_text=True)
    body = reply.json["error"]
    assert body["status"] == status and body["message"]
    return body


def test_same_bytes_twice_is_one_image(client: FlaskClient) -> None:
    data = image_bytes(40, 30, "PNG")
    first = upload(client, data)
    assert first.status_code == 201
    assert first.json["id"] == hashlib.sha256(data).hexdigest()
    assert (first.json["width"], first.json["height"], first.json["format"]) == (40, 30, "PNG")
    assert first.json["byte_size"] == len(data)
    second = upload(client, data, name="other-name.png")
    assert second.status_code == 200
    assert second.json == first.json
    meta = client.get(f"/v1/images/{first.json['id']}")
    assert meta.status_code == 200 and meta.json["width"] == 40
    raw = client.get(f"/v1/images/{first.json['id']}/file")
    assert raw.status_code == 200 and raw.data == data and raw.mimetype == "image/png"


def test_jpeg_upload(client: FlaskClient) -> None:
    reply = upload(client, image_bytes(20, 10, "JPEG"), name="x.jpg")
    assert reply.status_code == 201 and reply.json["format"] == "JPEG"


def test_not_an_image_is_415(client: FlaskClient) -> None:
    body = _error(upload(client, b"%PDF-1.4 definitely not a picture" * 10, "doc.pdf"), 415)
    assert "file" in body["fields"]


def test_truncated_image_is_422(client: FlaskClient) -> None:
    data = image_bytes(64, 64, "PNG", noise=True)
    body = _error(upload(client, data[: len(data) * 2 // 3]), 422)
    assert "truncated" in body["message"]


def test_too_many_pixels_is_413_before_decoding(client: FlaskClient) -> None:
    # 4000x4000 of one colour: a few kB that would decode to 48 MB (a small bomb).
    buffer = io.BytesIO()
    PILImage.new("L", (4000, 4000)).save(buffer, "PNG")
    assert len(buffer.getvalue()) < 200_000
    body = _error(upload(client, buffer.getvalue()), 413)
    assert "16000000 pixels" in body["message"]


def test_too_many_bytes_is_413(client: FlaskClient) -> None:
    data = image_bytes(280, 260, "BMP")  # 218 kB: over 200 kB, but within the body limit
    assert 200_000 < len(data) < 250_000
    body = _error(upload(client, data, "big.bmp"), 413)
    assert "bytes" in body["message"]
    # Far beyond the limit: Flask refuses the body itself, still with our JSON.
    _error(upload(client, b"x" * 400_000), 413)


def test_missing_file_field_is_422(client: FlaskClient) -> None:
    reply = client.post("/v1/images", data={"other": "x"}, content_type="multipart/form-data")
    assert _error(reply, 422)["fields"] == {"file": ["Missing data for required field."]}


def test_unknown_image_is_404_json(client: FlaskClient) -> None:
    _error(client.get("/v1/images/" + "0" * 64), 404)
    _error(client.get("/v1/images/" + "0" * 64 + "/file"), 404)

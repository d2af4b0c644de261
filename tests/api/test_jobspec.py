"""The request schemas alone: shapes, both batch forms, and the fast path for big batches."""

from __future__ import annotations

import time

import pytest
from marshmallow import ValidationError

from shared.jobspec import (
    BatchCreateSchema,
    JobCreateSchema,
    batch_limit,
    expand_batch,
    flatten_errors,
)
from shared.spec import RenderParams

A, B = "a" * 64, "b" * 64


def _errors(schema, data) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        schema.load(data)
    return flatten_errors(caught.value.messages)


def test_job_defaults_and_style_shorthand() -> None:
    job = JobCreateSchema().load({"content": A, "styles": [B, {"image": A, "weight": 3}]})
    assert job["params"] == RenderParams() and job["priority"] == 0
    assert job["styles"] == [{"image": B, "weight": 1.0}, {"image": A, "weight": 3.0}]


def test_job_errors_are_dotted_paths() -> None:
    fields = _errors(JobCreateSchema(), {
        "content": "nope", "styles": [{"image": A, "weight": -1}], "priority": 11,
        "params": {"size": 0, "extra": 1}, "webhook_url": "ftp://x"})
    assert set(fields) == {"content", "styles.0.weight", "priority", "params.size",
                           "params.extra", "webhook_url"}
    # An init_image without params.init = "image" is no contradiction: it means "image".
    job = JobCreateSchema().load({"content": A, "styles": [B], "init_image": A})
    assert job["params"].init == "image"


def test_batch_forms_expand_alike() -> None:
    pairs = BatchCreateSchema().load({"contents": [A, B], "styles": [A, B, A]})
    jobs = expand_batch(pairs)
    assert len(jobs) == 6 and {j["params"] is pairs["params"] for j in jobs} == {True}
    listed = expand_batch(BatchCreateSchema().load({"jobs": [{"content": A, "styles": [B]}]}))
    assert listed[0]["styles"] == [{"image": B, "weight": 1.0}]


def test_big_jobs_form_validates_each_shape_once() -> None:
    body = {"jobs": [{"content": f"{n:064x}", "styles": [B], "params": {"size": 256}}
                     for n in range(10_000)]}
    start = time.perf_counter()
    jobs = BatchCreateSchema().load(body)["jobs"]
    assert time.perf_counter() - start < 1.5
    assert len({j["content"] for j in jobs}) == 10_000 and jobs[7]["params"].size == 256
    body["jobs"][9_999]["params"] = {"size": 3}
    assert list(_errors(BatchCreateSchema(), body)) == ["jobs.9999.params.size"]


def test_batch_limit_is_checked_before_validation() -> None:
    with batch_limit(10):
        fields = _errors(BatchCreateSchema(), {"contents": [A] * 4, "styles": [B] * 3})
    assert "at most 10 jobs" in fields["contents"][0]

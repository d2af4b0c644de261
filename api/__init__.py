"""The stylefarm HTTP API: a thin Flask app that records jobs and queues them.

`create_app(settings)` is the factory (Flask's tutorial pattern): gunicorn runs
`"api:create_app()"`, tests build one app per database. The API never imports torch
or `worker/`: it validates with `shared.jobspec`/`shared.spec`, writes rows through
`shared.models`/`shared.transitions`, and sends messages by task name via `shared.queue`.

The database must be migrated before the first request: `shared.migrate.upgrade(url)`
(the CLI's `stylefarm api`/`up` do it; pass `migrate=True` to do it here).
"""

from __future__ import annotations

import time

from flask import Flask, Response, g
from flask_smorest import Api
from sqlalchemy.orm import sessionmaker

from shared.db import engine_for
from shared.jobspec import set_batch_limit
from shared.settings import Settings, get_settings
from shared.spec import set_output_limit
from shared.storage import Storage

# Room for the multipart envelope around a file of max_upload_bytes.
_MULTIPART_SLACK = 64 * 1024


class _Api(Api):
    """flask-smorest's Api, with our one error shape in the OpenAPI document."""

    from api.errors import ErrorSchema as ERROR_SCHEMA

    def _register_error_handlers(self) -> None:  # ours are registered by api.errors
        pass


def create_app(settings: Settings | None = None, *, migrate: bool = False) -> Flask:
    from api import (
        auth,
        batch_files,
        batches,
        context,
        contract,
        docs,
        errors,
        health,
        images,
        jobs,
        metrics,
        parsing,
        swagger,
        ui,
    )

    settings = settings or get_settings()
    url = settings.effective_database_url
    if migrate:
        from shared.migrate import upgrade

        upgrade(url)
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + _MULTIPART_SLACK,
        API_TITLE="stylefarm",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="swagger",  # /v1/docs is ours: api.docs, works offline
        OPENAPI_SWAGGER_UI_URL=swagger.ASSETS_URL,  # packaged: api.swagger, works offline
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    engine = engine_for(url)
    app.extensions["stylefarm"] = context.State(
        settings=settings, engine=engine, storage=Storage(settings.data_dir),
        sessions=sessionmaker(bind=engine, expire_on_commit=False),
        readers=sessionmaker(bind=engine.execution_options(isolation_level="AUTOCOMMIT")))

    api = _Api(app, spec_kwargs={
        "info": {"description": "Neural style transfer render farm: upload images, submit "
                                "jobs or batches, follow them, collect results. Errors are "
                                "always {\"error\": {\"status\", \"message\", \"fields\"}}."},
    })
    api.spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer",
                   "description": "required when the farm has API keys (STYLEFARM_API_KEYS)"})
    api.spec.options["security"] = [{"bearer": []}] if settings.api_keys else []
    contract.register(api)
    for blueprint in (images.blp, jobs.blp, batches.blp, batch_files.blp, health.blp):
        api.register_blueprint(blueprint)
    contract.complete(api.spec, settings)
    docs.register(app, api)
    swagger.register(app)
    ui.register(app)
    metrics.register(app)

    errors.register(app)
    app.before_request(parsing.limit_body)
    app.before_request(parsing.refuse_nul)
    app.before_request(auth.authenticate)
    app.before_request(lambda: set_batch_limit(settings.max_batch_jobs))
    app.before_request(lambda: set_output_limit(settings.max_output_pixels))
    app.before_request(_start_clock)
    app.after_request(_server_timing)
    app.after_request(_no_sniffing)
    app.teardown_appcontext(context.close_db)
    return app


def _start_clock() -> None:
    g.request_started = time.perf_counter()


def _no_sniffing(response: Response) -> Response:
    """Browsers take every reply as the type it says, never as what its bytes look like:
    an uploaded image that is also valid HTML stays an image."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _server_timing(response: Response) -> Response:
    """Time spent in the app, as a standard Server-Timing header.

    Lets a client (or bench/queue.py) tell the app's own latency from the network's and
    the client's, which on a busy machine are often the larger part.
    """
    started = g.get("request_started")
    if started is not None:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response

"""The rendering engine: a library that knows nothing of Celery, Flask or the database.

    from worker.engine.render import RenderSpec, render
    image = render(RenderSpec(content, [style], params), on_progress=print)

Deliberately empty: `worker.engine.images` (reading, checking and saving images) must be
importable without loading torch, so this package imports nothing on its own.
"""

"""The rendering engine: a library that knows nothing of Celery, Flask or the database.

    from worker.engine import RenderSpec, render
    image = render(RenderSpec(content, [style], params), on_progress=print)
"""

from worker.engine.images import ImageError, open_image, read_metadata, save_image
from worker.engine.render import Cancelled, ProgressEvent, RenderSpec, render

__all__ = ["Cancelled", "ImageError", "ProgressEvent", "RenderSpec", "open_image",
           "read_metadata", "render", "save_image"]

"""An output thinner than the network can see is rendered at 16 px and resized at the end."""

from __future__ import annotations

from PIL import Image

from shared.spec import RenderParams
from tests.engine.patterns import checkerboard, gradient
from worker.engine.render import RenderSpec, render


def test_a_thin_output_comes_back_at_the_size_asked_for() -> None:
    content = gradient(4, 400)  # at size 40: 0.4 x 40 px, planned as 16 x 40
    params = RenderParams.from_dict({"size": 40, "min_size": 40, "iterations": [2]})
    image = render(RenderSpec(content, [checkerboard(32, 32)], params), device="cpu")
    assert isinstance(image, Image.Image) and image.size == (1, 40)

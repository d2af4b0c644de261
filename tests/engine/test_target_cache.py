"""Style targets kept across renders: a batch reusing a style computes its targets once."""

from __future__ import annotations

import numpy as np

from shared.spec import RenderParams
from tests.engine.patterns import checkerboard, scene, stripes
from worker.engine.render import RenderSpec, render
from worker.engine_adapter import BoundedCache

PARAMS = {"size": 64, "min_size": 32, "iterations": [4, 3, 3], "seed": 3}


def _render(style_ids: list[str] | None, cache: dict | None, styles: list | None = None,
            **overrides: object):
    spec = RenderSpec(scene(64, 48), styles or [stripes(48, 48)],
                      RenderParams.from_dict({**PARAMS, **overrides}), style_ids=style_ids)
    return np.asarray(render(spec, device="cpu", target_cache=cache))


def test_cached_targets_give_the_same_image_and_are_reused() -> None:
    cache: dict = {}
    uncached = _render(None, None)
    first = _render(["stripes"], cache)
    assert len(cache) == 3  # one entry per (style, scale)
    keys = set(cache)
    second = _render(["stripes"], cache)
    assert set(cache) == keys  # nothing recomputed
    assert np.array_equal(uncached, first)
    assert np.array_equal(first, second)


def test_the_cache_is_what_the_render_reads() -> None:
    """Targets of another style stored under this style's id change the picture."""
    cache: dict = {}
    _render(["stripes"], cache, styles=[checkerboard(48, 48)])  # checkerboard's targets ...
    poisoned = _render(["stripes"], cache)  # ... now read for the stripes
    honest = _render(["stripes"], {})
    assert not np.array_equal(poisoned, honest)


def test_colour_preservation_is_not_cached() -> None:
    """Its style targets depend on the content, so they belong to one render."""
    cache: dict = {}
    _render(["stripes"], cache, preserve_color="histogram")
    assert cache == {}


def test_bounded_cache_evicts_the_least_recently_used() -> None:
    cache = BoundedCache(2)
    cache["a"], cache["b"] = 1, 2
    assert cache["a"] == 1  # a is now the most recent
    cache["c"] = 3
    assert set(cache) == {"a", "c"}

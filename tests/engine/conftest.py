"""Engine tests run on the CPU with the real VGG-19 weights, on tiny generated images."""

from __future__ import annotations

import pytest
import torch

from worker.engine.vgg import load_vgg


@pytest.fixture(autouse=True, scope="session")
def _cpu_model() -> None:
    """Load the model once for the session, so no test pays the load in its own time."""
    torch.manual_seed(0)
    load_vgg("max", "cpu", "relu5_1")

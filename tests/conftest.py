"""Shared test settings.

Under pytest-xdist every worker is its own process; letting each use all cores would
oversubscribe the 2-core CI machine, so workers get one intra-op thread each.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Caches the toolkit writes (ONNX exports, downloads) go to a private folder per test
# process, never into the user's $SAMPLECNN_HOME.
os.environ["SAMPLECNN_HOME"] = tempfile.mkdtemp(prefix="samplecnn-test-home-")

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """`../shared` beside the repository; tests using it skip where it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present (it is only beside the developers' checkout)")
    return SHARED

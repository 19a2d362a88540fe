import os

import pytest

import tinymono  # noqa: F401  (before NumPy: it sets OpenBLAS's idle-thread timeout, tinymono/__init__.py)
from tinymono import settings

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def no_settings():
    """Each test starts, and leaves, with no settings in force (settings.ACTIVE is process-wide)."""
    settings.ACTIVE = {}
    yield
    settings.ACTIVE = {}

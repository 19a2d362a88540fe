import os
import signal

import pytest

import tinymono  # noqa: F401  (before NumPy: it sets OpenBLAS's idle-thread timeout, tinymono/__init__.py)
from tinymono import settings

os.environ.setdefault("MPLBACKEND", "Agg")
# A test run started in the background of a shell (`cmd &`) inherits SIGINT ignored, and every process it
# starts would keep it ignored: the tests that send a Ctrl-C to a child would find it deaf. A handler here is
# reset to the default in each child, which then takes Ctrl-C as a terminal's job does.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def no_settings():
    """Each test starts, and leaves, with no settings in force (settings.ACTIVE is process-wide)."""
    settings.ACTIVE = {}
    yield
    settings.ACTIVE = {}

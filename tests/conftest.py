import os

import tinymono  # noqa: F401  (before NumPy: it sets OpenBLAS's idle-thread timeout, tinymono/__init__.py)

os.environ.setdefault("MPLBACKEND", "Agg")

"""The project's own files: written whole or not at all, and read back with one clear error.

Every file tinymono writes for itself (checkpoints, the activation store, the corpus, a lesson's
result.json, the reproduction report, the feature browser) goes through these few helpers:

- `atomic_write(path, write)`: write into `path.tmp<pid>` beside it, then rename it over `path`, so a
  reader sees the old file or the new one, never half of one;
- `remove_stale_temps(path)`: the `path.tmp<pid>` files that a killed process left behind (its pid
  no longer runs, or the file is a day old) are removed; a live writer's file is left alone;
- `writing(path)`: a context in which a full disk (ENOSPC) becomes a `DiskFullError` that names the
  file, the space left and what to do, instead of a bare OSError deep in NumPy;
- `write_npy(path, array)`: np.save's file, written with a plain file write so that a full disk says
  so (NumPy's own fast path reports only "N requested and M written");
- `read_json(path, error)`: a JSON object, or `error` (a `BadFile`) naming the file and the fix.

A reader that finds a file damaged raises a subclass of `BadFile` (a ValueError): CheckpointError,
StoreError, CorpusError. Its message names the file and the fix ("delete runs/.../acts_train to
harvest it again").
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import time
import tokenize
from contextlib import contextmanager
from pathlib import Path

import numpy as np

STALE_SECONDS = 24 * 3600  # a temporary file this old is stale even if its pid runs again (pids are reused)


class BadFile(ValueError):
    """A file tinymono wrote is missing parts, truncated, corrupt, or not what it should hold."""


class DiskFullError(OSError):
    """The disk filled up while tinymono wrote `path`."""

    def __init__(self, path):
        path = Path(path)
        folder = next((p for p in (path, *path.parents) if p.exists()), Path("."))
        free = shutil.disk_usage(folder).free
        super().__init__(errno.ENOSPC, f"disk full: cannot write {path} ({free:,} bytes free on its disk); "
                                       "free some space or choose a larger disk, then run the same command "
                                       "again (finished work is kept)")
        self.filename = str(path)

    def __str__(self):
        return self.strerror


def is_disk_full(error):
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def writing(path):
    """Turn a full disk met inside the block into a DiskFullError naming `path`."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path) from e
        raise


def _temp_name(path):
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def _pid_runs(pid):
    if pid <= 0:  # os.kill(0, ...) signals this process's group: no writer has pid 0
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; a number no pid can be
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def remove_stale_temps(path, prefix=None):
    """Remove the temporary files (or folders) `<prefix><pid>` beside `path` (default prefix:
    `path.name + ".tmp"`) whose process no longer runs, or that are over a day old. Returns their paths."""
    path = Path(path)
    prefix = f"{path.name}.tmp" if prefix is None else prefix
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    removed = []
    if not path.parent.is_dir():
        return removed
    for other in path.parent.iterdir():
        match = pattern.match(other.name)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            age = time.time() - other.lstat().st_mtime
        except FileNotFoundError:  # its writer just renamed or removed it
            continue
        if age < STALE_SECONDS and (pid == os.getpid() or _pid_runs(pid)):
            continue  # a live writer's (ours included: another thread may be writing it)
        if other.is_dir() and not other.is_symlink():
            shutil.rmtree(other, ignore_errors=True)
        else:
            other.unlink(missing_ok=True)
        removed.append(other)
    return removed


def atomic_write(path, write):
    """Write `path` through `write(binary file)`: into a temporary file beside it, flushed to disk, then
    renamed over `path`. On any failure the temporary file is removed and `path` is as it was; a full
    disk raises DiskFullError."""
    path = Path(path)
    remove_stale_temps(path)
    tmp = _temp_name(path)
    try:
        with writing(path):
            with open(tmp, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never a mix
            _sync_folder(path.parent)  # and the rename itself reaches the disk (a power cut could undo it)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _sync_folder(folder):
    """fsync a folder, so that a rename inside it is on disk; where folders cannot be opened (not POSIX), a
    no-op."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder: the rename is as safe as they make it
        pass
    finally:
        os.close(fd)


def write_npy(path, array):
    """np.save(path, array) for a plain (non-object) array, written with Python's own file write so that a
    full disk raises OSError(ENOSPC) (NumPy's np.save reports it only as 'N requested and M written')."""
    array = np.ascontiguousarray(array)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(array))
        fh.write(array.data)


def npy_header(fh):
    """(shape, fortran_order, dtype) from the .npy header at the file's position, which is left just past
    it; read from the header alone, so nothing is allocated."""
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(fh)


def npy_layout(path, error, fix, whole=True):
    """(header bytes, dtype, shape) of a C-ordered .npy file, read from its header alone; a missing file,
    a damaged header or (if `whole`) a file too short for the shape it declares raises `error` naming the
    file and `fix`."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            shape, fortran, dtype = npy_header(fh)
            offset = fh.tell()
    except (OSError, ValueError, EOFError, tokenize.TokenError) as e:  # NumPy's header parser raises the last
        raise error(f"{path} cannot be read ({type(e).__name__}: {e}); {fix}") from e
    if fortran or dtype.hasobject:
        raise error(f"{path} holds a {'Fortran-ordered' if fortran else 'object'} array, which tinymono never "
                    f"writes; {fix}")
    need = offset + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if whole and size < need:
        raise error(f"{path} is truncated ({size:,} of {need:,} bytes); {fix}")
    return offset, dtype, shape


def read_json(path, error, fix, required=()):
    """The JSON object in `path`; `error` (naming the file and `fix`) if it is unreadable, not an object,
    or lacks one of the `required` keys."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise error(f"{path} cannot be read ({type(e).__name__}: {e}); {fix}") from e
    if not isinstance(obj, dict):
        raise error(f"{path} holds a JSON {type(obj).__name__}, not an object; {fix}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise error(f"{path} lacks {missing}; {fix}")
    return obj

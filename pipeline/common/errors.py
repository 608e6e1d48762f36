"""The two kinds of failure a command can end with.

- Bad input: the user's input, settings or environment cannot be used (`BadInput`, the stores'
  `StoreError`, and resource faults: a full disk, a read-only workspace, a permission denied). It is
  shown as one line that names the file or setting and the reason; the exit code is 1.
- Anything else is a bug: the command prints its traceback and exits with `BUG_EXIT_CODE`, so it is
  never mistaken for bad input.
"""

from __future__ import annotations

import errno

from stores.zarr_io import StoreError

BUG_EXIT_CODE = 70  # EX_SOFTWARE of sysexits.h: an internal software error

# OSErrors that say something about the machine or the files, not about avfix's code.
RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})


class BadInput(Exception):
    """Input, settings or environment that make a command (or one video of it) impossible; one line."""


# What a command reports as one line; every other exception is a bug.
PROBLEMS: tuple[type[Exception], ...] = (BadInput, StoreError)


def is_problem(exc: BaseException) -> bool:
    """Whether `exc` is bad input (one line) rather than a bug (a traceback)."""
    return isinstance(exc, PROBLEMS) or (isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS)


def one_line(exc: BaseException) -> str:
    """The line a problem is shown as (an OSError names its file)."""
    if isinstance(exc, OSError) and not isinstance(exc, PROBLEMS) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)

"""The two kinds of failure a command can end with.

- `BadInput` (and the stores' `StoreError`): the user's input, settings or environment cannot be used.
  It is shown as one line that names the file or setting and the reason; the exit code is 1.
- Anything else is a bug: the command prints its traceback and exits with `BUG_EXIT_CODE`, so it is
  never mistaken for bad input.
"""

from __future__ import annotations

from stores.zarr_io import StoreError

BUG_EXIT_CODE = 70  # EX_SOFTWARE of sysexits.h: an internal software error


class BadInput(Exception):
    """Input, settings or environment that make a command (or one video of it) impossible; one line."""


# What a command reports as one line; every other exception is a bug.
PROBLEMS: tuple[type[Exception], ...] = (BadInput, StoreError)

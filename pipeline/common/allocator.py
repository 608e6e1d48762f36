"""glibc malloc settings for large tensors on the CPU.

A CPU forward pass of the STA network or a classifier allocates and frees activations of 50-300 MB per
batch. glibc serves blocks above its mmap threshold (at most 32 MB by its dynamic rule) with a fresh
`mmap` and returns them with `munmap` when freed, so every batch faults in every page of every activation
again: on our 2-core machine predict's network pass (`fast` preset, 480 frames) spent 36 of its 56 s in
the kernel, 26 million minor page faults. With blocks up to 1 GiB served from the heap and kept there,
it took 18 s (0.6 s in the kernel, 0.5 million faults) for 0.5 GB more resident memory. A thread's
blocks come from a per-thread arena whose heaps are capped at 64 MB, above which glibc maps anyway: one
arena (the main one, which grows without a cap) keeps a dask worker thread's tensors on the heap too
(43.6 s → 18.1 s in a thread). Freed blocks then stay resident, so each job ends with a `malloc_trim`
(`release_free_memory`): on the `paper` preset's pseudolabel passes (160 frames, one thread) glibc's
defaults took 283 s at 6.2 GB peak, the settings alone 147 s at 9.0 GB, with the trim 135 s at 8.1 GB.

The settings are the environment variables glibc reads at start-up, which this process applies to
itself with `mallopt` (`tune_allocator`) before its threads start, and hands to the processes it
starts (`ENVIRON`: dask's local workers). Set any of them yourself, in the environment Python starts
with, and avfix leaves all three alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
LARGE = 1 << 30  # blocks up to 1 GiB from the heap; up to 1 GiB of free heap kept before trimming
GLIBC_CAP = 32 << 20  # where glibc's dynamic mmap threshold stops growing (64-bit); it trims at twice that

ENVIRON = {"MALLOC_MMAP_THRESHOLD_": str(LARGE), "MALLOC_TRIM_THRESHOLD_": str(LARGE), "MALLOC_ARENA_MAX": "1"}

_tuned: bool | None = None


@lru_cache(maxsize=1)
def start_environment() -> dict[str, str]:
    """The environment this process started with (Linux: /proc/self/environ; elsewhere `os.environ`).

    `os.environ` is not the user's word on these variables: a dask nanny writes its workers' variables
    into its own process's `os.environ` before starting them (dask's MALLOC_TRIM_THRESHOLD_ of 64 KiB
    among them), so after any local cluster of worker processes, ours or not, they would look as if the
    user had set them. glibc, too, reads them only at start-up.
    """
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return dict(os.environ)
    pairs = (entry.decode(errors="replace").partition("=") for entry in raw.split(b"\0") if b"=" in entry)
    return {name: value for name, _, value in pairs}


def user_values() -> dict[str, str]:
    """The malloc variables of `ENVIRON` the user set (in the environment Python started with)."""
    started = start_environment()
    return {name: started[name] for name in ENVIRON if name in started}


def user_settings() -> bool:
    """Whether the user set glibc's malloc variables (then theirs hold)."""
    return bool(user_values())


def tune_allocator() -> bool:
    """Apply `ENVIRON`'s settings to this process, once; False where there is no glibc (macOS, musl) or
    the user chose their own."""
    global _tuned
    if _tuned is None:
        _tuned = False
        if not user_settings():
            _tuned = _mallopt({_M_MMAP_THRESHOLD: LARGE, _M_TRIM_THRESHOLD: LARGE, _M_ARENA_MAX: 1})
    return _tuned


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the system (`malloc_trim`), after a job: with the settings a
    freed activation stays in the heap, and between jobs of different sizes (coarse maps, then fine maps,
    then another stage) the free pieces would add up to gigabytes of resident memory no job uses. Once
    per job costs one round of page faults per job, not one per batch. False where there is no glibc or
    avfix did not tune the allocator."""
    if not _tuned:
        return False
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


@contextmanager
def training_heap() -> Iterator[None]:
    """glibc's own thresholds while a network trains (also a decorator), the settings again after it. A
    training step's activations and gradients of many sizes, freed in backward's order, leave holes in
    one heap that count as resident: the `paper` preset's pseudolabel (classifier training, then the
    passes) peaked at 22.1 GB with the settings throughout, 14.0 GB with glibc's defaults, on a 24 GB
    machine; with this, 13.2 GB (and 531 s against 464 s with the settings, 559 s with the defaults).
    Training keeps glibc's behaviour (its threshold fixed where its dynamic rule ends up); inference
    passes, whose batches have one shape, keep the settings."""
    if not _tuned:
        yield
        return
    _mallopt({_M_MMAP_THRESHOLD: GLIBC_CAP, _M_TRIM_THRESHOLD: 2 * GLIBC_CAP})
    try:
        yield
    finally:
        _mallopt({_M_MMAP_THRESHOLD: LARGE, _M_TRIM_THRESHOLD: LARGE})
        release_free_memory()


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _mallopt(settings: dict[int, int]) -> bool:
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in settings.items())

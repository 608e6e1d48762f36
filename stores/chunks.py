"""Whole t-chunks of avfix's arrays, read and written straight as chunk files, every one checked.

Layout (what `zarr_io.create_array` makes): a local directory, the default "/" chunk keys, chunks whole
along every axis but t, and the codecs bytes -> zstd -> crc32c. The CRC32C of the compressed bytes ends
every chunk (Zarr v3's `crc32c` codec), and every chunk is written, even an all-fill one
(`write_empty_chunks`), so a reader tells a damaged chunk from a good one and a missing chunk from an
empty one. The files are exactly what zarr reads and writes (a test checks both ways); arrays written by
an earlier avfix, without the checksum, are still read (damage then shows only as undecodable bytes).

zarr-python serves every read and write through one event-loop thread: reader threads of a training
loader queue behind each other there, and writing a 16-frame chunk of 356 px frames cost 3.6 ms per
frame against 0.6 ms for compressing it with numcodecs (which releases the GIL) and writing the file.
Writes go to a temporary name and are renamed into place, so a killed writer leaves no torn chunk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from stores import faults
from stores.zarr_io import VIDEOS, StoreError

_CRC_BYTES = 4


class ChunkError(StoreError):
    """A chunk of a video's array is missing or damaged; the message names store, video, array and chunk."""

    def __init__(self, folder: Path, index: int, what: str) -> None:
        self.store, self.video_id, self.array = _locate(folder)
        self.index = index
        super().__init__(f"{self.store}: video {self.video_id}, array {self.array}, chunk {index}: {what}")


def _locate(folder: Path) -> tuple[Path, str, str]:
    """(store, video id, array name) of an array folder `<store>/videos/<video>/<array>`."""
    parts = folder.parts
    if len(parts) >= 3 and parts[-3] == VIDEOS:
        return Path(*parts[:-3]), parts[-2], parts[-1]
    return folder.parent, "?", folder.name


_CRC32C_RESIDUE = 0x48674BC7


def google_crc32c() -> Any:
    import google_crc32c as module  # zarr's own dependency for its crc32c codec

    return module


def crc32c(data: bytes) -> bytes:
    """The CRC32C of `data` as the 4 little-endian bytes zarr's crc32c codec appends."""
    return int(google_crc32c().value(data)).to_bytes(4, "little")


class DirectChunks:
    """The t-chunks of one array of a local store (see the module docstring)."""

    def __init__(self, folder: Path, shape: tuple[int, ...], chunk_shape: tuple[int, ...], dtype: np.dtype,
                 fill_value: Any, level: int, checksum: bool) -> None:  # fmt: skip
        from numcodecs import Zstd  # zarr's own dependency

        self.folder = folder
        self.shape = shape
        self.chunk_shape = chunk_shape
        self.dtype = dtype
        self.fill_value = fill_value
        self.checksum = checksum
        self._zstd = Zstd(level=level)
        self._suffix = "/".join("0" for _ in chunk_shape[1:])

    @classmethod
    def for_array(cls, store: str | Path, array: zarr.Array) -> "DirectChunks | None":
        """The chunks of `array` when it has avfix's layout, else None (callers then go through zarr)."""
        from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec
        from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding

        meta = array.metadata
        folder = Path(store) / array.path
        if getattr(meta, "zarr_format", None) != 3 or not folder.is_dir():
            return None
        codecs = list(meta.codecs)
        checksum = len(codecs) == 3 and isinstance(codecs[2], Crc32cCodec)
        layout = (
            len(codecs) == 2 + checksum and isinstance(codecs[0], BytesCodec) and isinstance(codecs[1], ZstdCodec)
            and (codecs[0].endian is None or codecs[0].endian.value == "little") and not codecs[1].checksum
        )  # fmt: skip
        chunk_shape = tuple(array.chunks)
        whole_but_t = tuple(chunk_shape[1:]) == tuple(array.shape[1:])
        keys = meta.chunk_key_encoding
        if not (layout and whole_but_t and isinstance(keys, DefaultChunkKeyEncoding) and keys.separator == "/"):
            return None
        dtype = np.dtype(array.dtype).newbyteorder("<")
        return cls(folder, tuple(array.shape), chunk_shape, dtype, meta.fill_value, codecs[1].level, checksum)

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.chunk_shape[1:])

    @property
    def n_chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_shape[0])

    def path(self, index: int) -> Path:
        return self.folder / "c" / str(index) / self._suffix if self._suffix else self.folder / "c" / str(index)

    def raw(self, index: int) -> memoryview:
        """Chunk `index`'s compressed bytes (without their checksum), checked against it."""
        try:
            raw = self.path(index).read_bytes()
        except FileNotFoundError:
            raise ChunkError(self.folder, index, f"missing ({self.path(index)})") from None
        if not self.checksum:
            return memoryview(raw)
        # The CRC32C of bytes followed by their own CRC32C (little-endian) is a constant: the whole file
        # is checked in one pass, without first copying the data apart from its checksum.
        if len(raw) < _CRC_BYTES or google_crc32c().value(raw) != _CRC32C_RESIDUE:
            raise ChunkError(self.folder, index, f"damaged: checksum mismatch ({self.path(index)})")
        return memoryview(raw)[:-_CRC_BYTES]

    def read(self, index: int) -> np.ndarray:
        """Chunk `index` along t, cut to the array's length."""
        rows = min((index + 1) * self.chunk_shape[0], self.shape[0]) - index * self.chunk_shape[0]
        if not self.checksum and not self.path(index).exists():
            # An array of an earlier avfix (no checksum, empty chunks not written): the fill value.
            return np.full((rows, *self.chunk_shape[1:]), self.fill_value, dtype=self.dtype)
        raw = self.raw(index)
        out = np.empty(self.chunk_shape, dtype=self.dtype)
        try:
            self._zstd.decode(raw, out=out)
        except (RuntimeError, ValueError) as exc:  # numcodecs: "Zstd decompression error", a wrong size
            raise ChunkError(self.folder, index, f"damaged: {exc} ({self.path(index)})") from exc
        return out[:rows]

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) (clamped to the array), assembled from their chunks."""
        start, stop = max(start, 0), min(stop, self.shape[0])
        if stop <= start:
            return np.empty((0, *self.chunk_shape[1:]), dtype=self.dtype)
        length = self.chunk_shape[0]
        first, last = start // length, (stop - 1) // length
        blocks = [self.read(index) for index in range(first, last + 1)]
        joined = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        return joined[start - first * length : stop - first * length]

    def write(self, start: int, data: np.ndarray) -> None:
        """Rows [start, start + len(data)): `start` on a chunk boundary, the end on one or at the array's end."""
        length = self.chunk_shape[0]
        stop = start + data.shape[0]
        if start % length or (stop % length and stop != self.shape[0]) or stop > self.shape[0]:
            raise ValueError(f"rows {start}:{stop} are not whole chunks of {length} of an array of {self.shape[0]}")
        for begin in range(start, stop, length):
            block = np.ascontiguousarray(data[begin - start : begin - start + length], dtype=self.dtype)
            if block.shape[0] < length:  # zarr stores the last chunk whole, padded with the fill value
                padded = np.full(self.chunk_shape, self.fill_value, dtype=self.dtype)
                padded[: block.shape[0]] = block
                block = padded
            encoded = bytes(self._zstd.encode(block))
            if self.checksum:
                encoded += crc32c(encoded)
            path = self.path(begin // length)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial")
            partial.write_bytes(encoded)
            partial.replace(path)
            faults.reached("chunk")


class ZarrRows:
    """Row-block reads and writes through zarr, for arrays `DirectChunks` does not cover."""

    def __init__(self, array: zarr.Array) -> None:
        self.array = array

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def write(self, start: int, data: np.ndarray) -> None:
        self.array[start : start + data.shape[0]] = data
        faults.reached("chunk")

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[max(start, 0) : stop])


def local_root(array: zarr.Array) -> Path | None:
    """The folder of the local store holding `array` (None for any other kind of store)."""
    root = getattr(array.store, "root", None)
    return Path(root) if root is not None else None


def rows_of(array: zarr.Array) -> DirectChunks | ZarrRows:
    """The fastest correct, checked reader and writer of whole t-chunks of `array`."""
    root = local_root(array)
    direct = DirectChunks.for_array(root, array) if root is not None else None
    return direct or ZarrRows(array)


def read_rows(array: zarr.Array, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows [start, stop) of `array`, every chunk checked (a missing or damaged one raises ChunkError)."""
    return rows_of(array).read_rows(start, array.shape[0] if stop is None else stop)

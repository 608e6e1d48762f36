"""Whole t-chunks of avfix's arrays, read and written straight as chunk files, every one checked.

Layout (what `zarr_io.create_array` makes): a local directory, zarr v3's default chunk keys with "."
separators ("c.3.0.0", one folder per array; the "/" keys of stores written before are read too), chunks whole
along every axis but t, and the codecs bytes -> zstd -> crc32c, or one of avfix's own chains
(`stores.codecs`): avfix.fixed_step -> bytes -> zstd -> crc32c (flow), avfix.jpeg -> crc32c (frames).
Any other layout is read and written through zarr, and the first such array a process meets is logged.
The CRC32C of the compressed bytes ends every chunk (Zarr v3's `crc32c` codec), and every chunk is
written, even an all-fill one (`write_empty_chunks`), so a reader tells a damaged chunk from a good one
and a missing chunk from an empty one. The files are exactly what zarr reads and writes (a test checks
both ways); arrays written by an earlier avfix, without the checksum, are still read (damage then shows
only as undecodable bytes).

zarr-python serves every read and write through one event-loop thread: reader threads of a training
loader queue behind each other there, and writing a 16-frame chunk of 356 px frames cost 3.6 ms per
frame against 0.6 ms for compressing it with numcodecs (which releases the GIL) and writing the file.
Writes go to a temporary name and are renamed into place, so a killed writer leaves no torn chunk.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zarr

from stores import codecs, faults, fencing
from stores.zarr_io import VIDEOS, StoreError

log = logging.getLogger(__name__)

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


class _ZstdBytes:
    """bytes -> zstd: the arrays' plain layout."""

    def __init__(self, level: int) -> None:
        from numcodecs import Zstd  # zarr's own dependency

        self._zstd = Zstd(level=level)

    def encode(self, block: np.ndarray) -> bytes:
        return bytes(self._zstd.encode(block))

    def decode(self, raw: memoryview, out: np.ndarray) -> None:
        self._zstd.decode(raw, out=out)


class _FixedStepZstd(_ZstdBytes):
    """avfix.fixed_step -> bytes -> zstd: floats kept as int16 multiples of a step (the flow)."""

    def __init__(self, level: int, step: float) -> None:
        super().__init__(level)
        self.step = step

    def encode(self, block: np.ndarray) -> bytes:
        return super().encode(codecs.to_steps(block, self.step))

    def decode(self, raw: memoryview, out: np.ndarray) -> None:
        steps = np.empty(out.shape, dtype="<i2")
        super().decode(raw, steps)
        out[...] = codecs.from_steps(steps, self.step, out.dtype)


class _JpegFrames:
    """avfix.jpeg: one JPEG per frame (the frames, lossy)."""

    def __init__(self, quality: int, subsampling: str) -> None:
        self.quality = quality
        self.subsampling = subsampling

    def encode(self, block: np.ndarray) -> bytes:
        return codecs.encode_jpeg_frames(block, self.quality, self.subsampling)

    def decode(self, raw: memoryview, out: np.ndarray) -> None:
        codecs.decode_jpeg_frames(raw, out)


Coder = _ZstdBytes | _JpegFrames


def _coder(body: list[Any]) -> Coder | None:
    """The direct coder of a chain of codecs (the crc32c left off), or None for a chain it does not know."""
    from zarr.codecs import BytesCodec, ZstdCodec

    def plain_zstd(pair: list[Any]) -> bool:
        return (
            len(pair) == 2 and isinstance(pair[0], BytesCodec) and isinstance(pair[1], ZstdCodec)
            and (pair[0].endian is None or pair[0].endian.value == "little") and not pair[1].checksum
        )  # fmt: skip

    if plain_zstd(body):
        return _ZstdBytes(body[1].level)
    if len(body) == 3 and isinstance(body[0], codecs.FixedStepCodec) and plain_zstd(body[1:]):
        return _FixedStepZstd(body[2].level, body[0].step)
    if len(body) == 1 and isinstance(body[0], codecs.JpegFramesCodec):
        return _JpegFrames(body[0].quality, body[0].subsampling)
    return None


_FALLBACKS_LOGGED: set[str] = set()


def _log_fallback(array: zarr.Array, why: str) -> None:
    """Say once per process and kind of array that it is read through zarr: slower, and unchecked."""
    if why not in _FALLBACKS_LOGGED:
        _FALLBACKS_LOGGED.add(why)
        log.warning("%s (and any other array like it): %s; read and written through zarr instead "
                    "(slower, and without avfix's chunk checks)", array.path, why)  # fmt: skip


class DirectChunks:
    """The t-chunks of one array of a local store (see the module docstring)."""

    def __init__(self, folder: Path, shape: tuple[int, ...], chunk_shape: tuple[int, ...], dtype: np.dtype,
                 fill_value: Any, coder: Coder, checksum: bool, separator: str = ".") -> None:  # fmt: skip
        self.folder = folder
        self.shape = shape
        self.chunk_shape = chunk_shape
        self.dtype = dtype
        self.fill_value = fill_value
        self.checksum = checksum
        self.coder = coder
        self.separator = separator
        self._suffix = "".join(separator + "0" for _ in chunk_shape[1:])

    @classmethod
    def for_array(cls, store: str | Path, array: zarr.Array) -> "DirectChunks | None":
        """The chunks of `array` when it has a layout read here, else None (callers then go through zarr,
        which is logged once)."""
        from zarr.codecs import Crc32cCodec
        from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding

        meta = array.metadata
        folder = Path(store) / array.path
        if getattr(meta, "zarr_format", None) != 3 or not folder.is_dir():
            return None
        chain = list(meta.codecs)
        checksum = bool(chain) and isinstance(chain[-1], Crc32cCodec)
        coder = _coder(chain[:-1] if checksum else chain)
        chunk_shape = tuple(array.chunks)
        keys = meta.chunk_key_encoding
        if coder is None:
            names = " -> ".join(str(c.to_dict()["name"]) for c in chain)
            _log_fallback(array, f"codecs {names} not read directly")
            return None
        if tuple(chunk_shape[1:]) != tuple(array.shape[1:]):
            _log_fallback(array, "chunks split along axes other than t")
            return None
        if not (isinstance(keys, DefaultChunkKeyEncoding) and keys.separator in ("/", ".")):
            _log_fallback(array, "chunk keys other than zarr v3's default")
            return None
        dtype = np.dtype(array.dtype).newbyteorder("<")
        return cls(folder, tuple(array.shape), chunk_shape, dtype, meta.fill_value, coder, checksum, keys.separator)

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.chunk_shape[1:])

    @property
    def n_chunks(self) -> int:
        return -(-self.shape[0] // self.chunk_shape[0])

    def path(self, index: int) -> Path:
        return self.folder / f"c{self.separator}{index}{self._suffix}"

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
            self.coder.decode(raw, out)
        # numcodecs: "Zstd decompression error", a wrong size; JPEG: FrameCodecError (a ValueError), cv2.error
        except (RuntimeError, ValueError, cv2.error) as exc:
            raise ChunkError(self.folder, index, f"damaged: {exc} ({self.path(index)})") from exc
        return out[:rows]

    def read_lazy(self, index: int) -> "np.ndarray | codecs.JpegChunk":
        """Chunk `index` for a reader that takes only some of its frames: JPEG frames decode one by one
        when first indexed (`codecs.JpegChunk`), other chunks whole, as `read`. Its checksum is checked
        now, its frames' decoding when they are."""
        if not isinstance(self.coder, _JpegFrames) or not self.checksum:
            return self.read(index)
        try:
            return _CheckedJpegChunk(self.raw(index), self.chunk_shape, self, index)
        except ValueError as exc:
            raise ChunkError(self.folder, index, f"damaged: {exc} ({self.path(index)})") from exc

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
            encoded = self.coder.encode(block)
            if self.checksum:
                encoded += crc32c(encoded)
            path = self.path(begin // length)
            if self.separator == "/":  # nested keys: the chunk's folders first (flat keys live in the array's)
                path.parent.mkdir(parents=True, exist_ok=True)
            fencing.check()
            partial = path.with_name(f".{path.name}.partial")
            partial.write_bytes(encoded)  # flat keys: into the array's own folder, which holds its zarr.json
            partial.replace(path)
            faults.reached("chunk")


class _CheckedJpegChunk(codecs.JpegChunk):
    """A lazily decoded JPEG chunk whose undecodable frame raises `ChunkError`, as a whole read would."""

    def __init__(self, data: memoryview, shape: tuple[int, ...], owner: DirectChunks, index: int) -> None:
        super().__init__(data, shape)
        self.owner, self.index = owner, index

    def __getitem__(self, k: int) -> np.ndarray:
        try:
            return super().__getitem__(k)
        except (ValueError, cv2.error) as exc:
            where = self.owner.path(self.index)
            raise ChunkError(self.owner.folder, self.index, f"damaged: {exc} ({where})") from exc


class ZarrRows:
    """Row-block reads and writes through zarr, for arrays `DirectChunks` does not cover."""

    def __init__(self, array: zarr.Array) -> None:
        self.array = array

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    def write(self, start: int, data: np.ndarray) -> None:
        fencing.check()
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

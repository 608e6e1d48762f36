"""Saliency metrics as the MIT saliency benchmark defines them (SPEC §5.3), batched over maps.

Every metric takes a batch of saliency maps already at the ground truth's size (see `resize_maps`) and
returns one float64 score per map, NaN exactly where the MATLAB original gives NaN (no fixation, a
constant map, an empty "other" map). The evaluation stage counts those NaNs; nothing here drops them.

Shapes: `saliency`, `density` (B, H, W) float; `fixations`, `other` (B, H, W) bool (or any dtype whose
non-zero entries are fixations). Computation is in float64: AUC-Judd's 1e-7 jitter is below float32's
resolution near 1.

Also here: STAViS's `postprocessMap` (min-max normalisation then a σ = 2 Gaussian with symmetric borders,
SPEC §5.2), the fixation density (a sum of Gaussians), the binary fixation map and the centre-bias map.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from models.config import SHUFFLED_AUC_SPLITS  # noqa: F401 - a default of the evaluate settings too

MATLAB_EPS = 2.220446049250313e-16  # MATLAB `eps`, used by the MIT KL divergence
AUC_JUDD_JITTER = 1e-7  # `rand(size)/10000000` in AUC_Judd.m
SHUFFLED_AUC_STEP = 0.1
CHUNK_PIXELS = 1 << 18  # pixels scored at once by `all_metrics` (2 MB per float64 map slice)


# --- maps -------------------------------------------------------------------------------------------


def resize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h, w) -> (B, H, W) float64, bicubic with antialiasing.

    MATLAB's `imresize` (used by every MIT metric and by STAViS) is bicubic (Keys, a = -0.5) and
    antialiases when shrinking; torch's bicubic with `antialias=True` is the same kernel widened the
    same way (without antialias torch uses a = -0.75), so the two agree to rounding everywhere except
    within the kernel's reach of the border (2 input pixels, 2 / scale when shrinking), where MATLAB
    mirrors the image and torch renormalises the truncated kernel (tests/test_metrics.py measures it).
    Like MATLAB on double input, values are not clipped (bicubic may overshoot slightly).
    """
    maps = maps.to(torch.float64)
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=tuple(size), mode="bicubic", antialias=True,
                         align_corners=False).squeeze(1)


def gaussian_kernel_1d(sigma: float, dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> Tensor:
    """The 1-D factor of `fspecial('gaussian', 2*ceil(3σ)+1, σ)` (normalised to sum 1)."""
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _symmetric_index(length: int, pad: int, device: torch.device) -> Tensor:
    """Indices of MATLAB's 'symmetric' padding (the edge sample repeated: c b a | a b c ...)."""
    index = torch.remainder(torch.arange(-pad, length + pad, device=device), 2 * length)
    return torch.where(index < length, index, 2 * length - 1 - index)


def blur_symmetric(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of (B, H, W) maps as `imfilter(map, fspecial(...), 'symmetric', 'conv')`.

    The 2-D `fspecial` kernel is the outer product of two normalised 1-D Gaussians, so two 1-D passes give
    the same result: per tap, an in-place weighted sum of shifted rows (down), then of shifted columns
    (across). Exact in float64, and far faster on the CPU than a float64 conv2d. The work goes in blocks
    of about `BLUR_BLOCK_PIXELS` so that a block's partial sums stay in the cache between taps: 1.5-1.75x
    faster than whole-map passes on a 3264 x 2448 map, with the same sums in the same order.
    """
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel_1d(sigma, maps.dtype, maps.device).tolist()
    radius = len(kernel) // 2
    batch, height, width = maps.shape
    padded = _symmetric_pad(maps, radius)
    out = torch.empty_like(maps)
    rows_per_block = max(1, BLUR_BLOCK_PIXELS // (width + 2 * radius))
    if rows_per_block >= height:  # small maps: several whole maps per block
        images = rows_per_block // height
        for first in range(0, batch, images):
            _blur_block(padded[first : first + images], out[first : first + images], kernel, 0, height)
    else:
        for index in range(batch):
            for top in range(0, height, rows_per_block):
                _blur_block(padded[index : index + 1], out[index : index + 1], kernel, top,
                            min(height, top + rows_per_block))
    return out


BLUR_BLOCK_PIXELS = 1 << 15  # 256 KB of float64 partial sums


def _symmetric_pad(maps: Tensor, radius: int) -> Tensor:
    """(B, H, W) -> (B, H + 2r, W + 2r) with MATLAB's 'symmetric' borders. Mirrored strips joined by `cat`
    (row copies) where the radius fits in the map; a gather of mirrored indices (which wrap) where not."""
    height, width = maps.shape[-2:]
    if radius <= min(height, width):
        maps = torch.cat([maps[:, :radius].flip(1), maps, maps[:, height - radius :].flip(1)], dim=1)
        return torch.cat([maps[..., :radius].flip(2), maps, maps[..., width - radius :].flip(2)], dim=2)
    padded = maps.index_select(1, _symmetric_index(height, radius, maps.device))
    return padded.index_select(2, _symmetric_index(width, radius, maps.device))


def _blur_block(padded: Tensor, out: Tensor, kernel: list[float], top: int, bottom: int) -> None:
    """Output rows [top, bottom) of (k, H, W) `out` from the (k, H + 2r, W + 2r) symmetric padding."""
    width = out.shape[-1]
    down = torch.zeros(padded.shape[0], bottom - top, padded.shape[-1], dtype=padded.dtype, device=padded.device)
    for offset, weight in enumerate(kernel):
        down.add_(padded[:, top + offset : bottom + offset], alpha=weight)
    target = out[:, top:bottom]
    target.zero_()
    for offset, weight in enumerate(kernel):
        target.add_(down[..., offset : offset + width], alpha=weight)


def postprocess_map(maps: Tensor, sigma: float = 2.0) -> Tensor:
    """STAViS `postprocessMap(map, σ)` on (B, h, w) maps in [0, 1] (`im2double` of the stored image).

    Clip to [0, 1], divide by the maximum, min-max normalise (a constant map becomes 0.5 everywhere, as
    `normalizeImage1` does), blur with σ. An all-zero map divides 0 by 0 in MATLAB and so becomes NaN
    everywhere, which makes every metric NaN for that frame; it is returned as NaN here too.
    """
    maps = maps.to(torch.float64).clamp(0.0, 1.0)
    low, high = torch.aminmax(maps.flatten(-2), dim=-1)
    low, high = low[..., None, None], high[..., None, None]
    span = high - low
    flat = span == 0
    # x / max, then min-max, is (x - min) / (max - min) when max > 0: one fused pass per map.
    scale = torch.where(flat, 0.0, 1.0 / torch.where(flat, 1.0, span))
    offset = torch.where(flat, 0.5, -low * scale)
    offset = torch.where(high == 0, torch.nan, offset)  # all zero: MATLAB's 0/0
    return blur_symmetric(torch.addcmul(offset, maps, scale), sigma)


def empty_maps(maps: Tensor) -> Tensor:
    """(B,) True where a map has no positive value (what `postprocess_map` turns into NaN)."""
    return ~(maps > 0).flatten(1).any(dim=1)


def fixation_pixels(points_xy: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel (row, column) of each fixation: pixel (r, c) covers [c, c+1) x [r, r+1)."""
    cols = torch.floor(points_xy[..., 0]).long()
    rows = torch.floor(points_xy[..., 1]).long()
    return torch.where(valid, rows, 0), torch.where(valid, cols, 0)


def fixation_counts(points_xy: Tensor, valid: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, K, 2) fixations (x = column, y = row, pixels) with a (B, K) validity mask -> (B, H, W) int32
    number of fixations per pixel. Points must lie inside the frame (the readers drop the others)."""
    batch = points_xy.shape[0]
    height, width = size
    rows, cols = fixation_pixels(points_xy, valid)
    hits = torch.zeros(batch, height * width, dtype=torch.int32, device=points_xy.device)
    hits.scatter_add_(1, rows * width + cols, valid.to(torch.int32))  # padded entries add 0
    return hits.view(batch, height, width)


def fixation_map(points_xy: Tensor, valid: Tensor, size: tuple[int, int]) -> Tensor:
    """The binary fixation map (B, H, W) bool of `fixation_counts`."""
    return fixation_counts(points_xy, valid, size) > 0


def fixation_density(points_xy: Tensor, valid: Tensor, size: tuple[int, int], sigma: Tensor | float) -> Tensor:
    """Sum of isotropic Gaussians (σ pixels, per map or shared) at the fixations, scaled to a peak of 1.

    Evaluated at pixel centres (c + 0.5, r + 0.5) as an outer product per fixation, so it is exact (no
    kernel truncation) and costs O(K (H + W) + K H W) as one batched matrix product. A map without
    fixations is all zero.
    """
    batch = points_xy.shape[0]
    height, width = size
    dtype = torch.float64
    sigma = torch.as_tensor(sigma, dtype=dtype, device=points_xy.device).reshape(-1, 1, 1).expand(batch, 1, 1)
    xs = torch.arange(width, dtype=dtype, device=points_xy.device) + 0.5
    ys = torch.arange(height, dtype=dtype, device=points_xy.device) + 0.5
    weight = valid.to(dtype).unsqueeze(-1)
    across = torch.exp(-((xs - points_xy[..., 0:1].to(dtype)) ** 2) / (2 * sigma**2)) * weight  # (B, K, W)
    down = torch.exp(-((ys - points_xy[..., 1:2].to(dtype)) ** 2) / (2 * sigma**2))  # (B, K, H)
    density = torch.einsum("bkh,bkw->bhw", down, across)
    peak = density.amax(dim=(-2, -1), keepdim=True)
    return density / torch.where(peak > 0, peak, 1.0)


def center_bias(size: tuple[int, int], sigma_fraction: float = 0.25, device: torch.device | None = None) -> Tensor:
    """A Gaussian centred in the frame, σ = `sigma_fraction` x width across and x height down; (H, W), peak 1."""
    height, width = size
    xs = (torch.arange(width, dtype=torch.float64, device=device) + 0.5 - width / 2) / (sigma_fraction * width)
    ys = (torch.arange(height, dtype=torch.float64, device=device) + 0.5 - height / 2) / (sigma_fraction * height)
    return torch.exp(-0.5 * ys[:, None] ** 2) * torch.exp(-0.5 * xs[None, :] ** 2)


# --- metrics ----------------------------------------------------------------------------------------


def _flat(maps: Tensor) -> Tensor:
    return maps.reshape(maps.shape[0], -1).to(torch.float64)


def _row_range(values: Tensor) -> tuple[Tensor, Tensor]:
    """(B, N) -> per-row (min, max) as (B, 1), in one pass; NaN rows give NaN."""
    low, high = torch.aminmax(values, dim=1)
    return low.unsqueeze(1), high.unsqueeze(1)


Bounds = tuple[Tensor, Tensor]  # a map's per-row (min, max) of `_row_range`, shared by the metrics of one map


def _minmax(values: Tensor, bounds: Bounds | None = None) -> Tensor:
    """(B, N) -> (x - min) / (max - min) per row; NaN for a constant row, as MATLAB's 0/0.

    Subtract, then divide: the minimum maps to exactly 0 and the maximum to exactly 1, so a fixation at
    either end meets the thresholds 0 and 1 (x * scale - min * scale left the minimum at -7.6e-17).
    """
    low, high = bounds if bounds is not None else _row_range(values)
    return (values - low) / (high - low)


def _is_constant(values: Tensor, bounds: Bounds | None = None) -> Tensor:
    """(B,) rows with a single value, or with a NaN (aminmax propagates it)."""
    low, high = bounds if bounds is not None else _row_range(values)
    return ((high == low) | torch.isnan(high)).squeeze(1)


def _centred(values: Tensor, bounds: Bounds | None = None) -> tuple[Tensor, Tensor]:
    """(B, N) -> (values minus their row mean, the root of its sum of squares; NaN for a constant row)."""
    centred = values - values.mean(dim=1, keepdim=True)
    spread = torch.sqrt(centred.square().sum(dim=1))
    return centred, torch.where(_is_constant(values, bounds), torch.nan, spread)


def _cc(sal: Tensor, gt_centred: Tensor, gt_spread: Tensor, bounds: Bounds | None = None) -> Tensor:
    centred, spread = _centred(sal, bounds)
    return (centred * gt_centred).sum(dim=1) / (spread * gt_spread)


def cc(saliency: Tensor, density: Tensor) -> Tensor:
    """Pearson correlation of the maps (`CC.m` z-scores both, then `corr2`: the z-scoring changes nothing
    but makes a constant map NaN, kept here)."""
    return _cc(_flat(saliency), *_centred(_flat(density)))


def nss(saliency: Tensor, fixations: Tensor) -> Tensor:
    """Mean of the z-scored map at the fixated pixels (`NSS.m`); NaN without fixations."""
    return _nss(_flat(saliency), fixations.reshape(fixations.shape[0], -1) != 0)


def _nss(sal: Tensor, fixated: Tensor, bounds: Bounds | None = None) -> Tensor:
    std, mean = torch.std_mean(sal, dim=1, correction=1)
    std = torch.where(_is_constant(sal, bounds), torch.nan, std)
    # mean of (x - mean) / std over the fixations = (mean of x over the fixations - mean) / std
    n_fix = fixated.sum(dim=1)
    at_fixations = torch.where(fixated, sal, 0.0).sum(dim=1) / n_fix
    return (at_fixations - mean) / std


def _sum_to_one_if_any(values: Tensor) -> Tensor:
    """`if any(map) map = map / sum(map)` for non-negative rows: all-zero rows stay zero."""
    total = values.sum(dim=1, keepdim=True)
    return values / torch.where(total > 0, total, 1.0)


def _sim_distribution(values: Tensor, bounds: Bounds | None = None) -> Tensor:
    """`similarity.m`'s normalisation: if any(map), min-max then divide by the sum (NaN if constant)."""
    low, high = bounds if bounds is not None else _row_range(values)
    all_zero = (low == 0) & (high == 0)
    constant = (high == low) & ~all_zero
    # (x - min) / (max - min) / sum((x - min) / (max - min)) = (x - min) / (sum(x) - N min)
    denominator = values.sum(dim=1, keepdim=True) - values.shape[1] * low
    denominator = torch.where(all_zero, 1.0, torch.where(constant, torch.nan, denominator))
    return (values - torch.where(all_zero, 0.0, low)) / denominator


def sim(saliency: Tensor, density: Tensor) -> Tensor:
    """Histogram intersection of the two maps, each min-max normalised then summing to 1 (`similarity.m`)."""
    return _sim(_flat(saliency), _sim_distribution(_flat(density)))


def _sim(sal: Tensor, gt_distribution: Tensor, bounds: Bounds | None = None) -> Tensor:
    return torch.minimum(_sim_distribution(sal, bounds), gt_distribution).sum(dim=1)


def kld(saliency: Tensor, density: Tensor) -> Tensor:
    """KL divergence of the ground-truth distribution from the map's (`KLdiv.m`), lower is better.

    Both maps are divided by their sums; score = sum(gt * log(eps + gt / (map + eps))) with MATLAB's eps.
    Bicubic resizing can leave tiny negative values, where MATLAB's log would turn complex; the map is
    clipped at zero first.
    """
    return _kld(_flat(saliency), _kld_distribution(_flat(density)))


def _kld_distribution(values: Tensor) -> Tensor:
    return _sum_to_one_if_any(values.clamp_min(0.0))


def _kld(sal: Tensor, gt_distribution: Tensor) -> Tensor:
    sal = _kld_distribution(sal)
    return (gt_distribution * torch.log(MATLAB_EPS + gt_distribution / (sal + MATLAB_EPS))).sum(dim=1)


def auc_judd(saliency: Tensor, fixations: Tensor, jitter: bool = True, generator: torch.Generator | None = None,
             noise: Tensor | None = None) -> Tensor:
    """AUC-Judd (`AUC_Judd.m`): one ROC point per fixation, thresholds at the fixated values.

    With `jitter`, uniform noise in [0, 1e-7) breaks ties first: `noise` (B, N) of U[0, 1) draws when
    given (maps scored against the same draws), else drawn from `generator`. For the
    i-th largest fixated value t_i: tp = i / Nf, fp = (#{pixels >= t_i} - i) / (Npix - Nf); the curve runs
    from (0, 0) to (1, 1) and its trapezoid area is the score. The counts come from binning all pixels
    among the thresholds (`searchsorted`); rows are padded with (1, 1) points, which add no area.
    """
    sal = _flat(saliency)
    fixated = fixations.reshape(fixations.shape[0], -1) != 0
    if jitter and noise is None:
        noise = _uniform(sal.shape, generator, sal.device)
    return _auc_judd(sal, fixated, noise if jitter else None)


def _auc_judd(sal: Tensor, fixated: Tensor, noise: Tensor | None) -> Tensor:
    batch, n_pixels = sal.shape
    if noise is not None:
        sal = torch.add(sal, noise, alpha=AUC_JUDD_JITTER)
    sal = _minmax(sal)
    n_fix = fixated.sum(dim=1)
    max_fix = int(n_fix.max()) if batch else 0
    if max_fix == 0:
        return torch.full((batch,), float("nan"), dtype=torch.float64, device=sal.device)
    # After min-max a row is NaN throughout or nowhere (a NaN input or a constant map).
    undefined = torch.isnan(sal[:, 0]) | (n_fix == 0)
    if bool(undefined.any()):
        sal = sal.masked_fill(undefined.unsqueeze(1), 0.0)
    fixated_values, is_fixation = _values_at(sal, fixated, max_fix)
    # Fixated values descending; padding (-inf) goes last.
    thresholds = torch.where(is_fixation, fixated_values, -torch.inf).sort(dim=1, descending=True).values
    at_or_above = _count_at_or_above(sal, thresholds)
    rank = torch.arange(1, max_fix + 1, device=sal.device, dtype=torch.float64).expand(batch, -1)
    n_fix_f = n_fix.to(torch.float64).unsqueeze(1)
    tp = rank / n_fix_f
    fp = (at_or_above.to(torch.float64) - rank) / (n_pixels - n_fix_f)
    padding = rank > n_fix_f
    tp = torch.where(padding, 1.0, tp)
    fp = torch.where(padding, 1.0, fp)
    area = _roc_area(tp, fp)
    return torch.where(undefined, torch.nan, area)


def _values_at(values: Tensor, mask: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """The (B, N) `values` where (B, N) `mask` is set, packed left into (B, width) with a validity mask."""
    rows, cols = mask.nonzero(as_tuple=True)  # row-major: rows ascending, columns ascending within a row
    return _pack(rows, values[rows, cols], values.shape[0], width)


def _pack(rows: Tensor, values: Tensor, batch: int, width: int) -> tuple[Tensor, Tensor]:
    """Entries `values` of rows `rows` (ascending) packed left into (B, width), with a validity mask."""
    per_row = torch.bincount(rows, minlength=batch)
    row_start = torch.cumsum(per_row, dim=0) - per_row
    slot = torch.arange(rows.numel(), device=values.device) - row_start[rows]
    packed = torch.zeros(batch, width, dtype=values.dtype, device=values.device)
    valid = torch.zeros(batch, width, dtype=torch.bool, device=values.device)
    packed[rows, slot] = values
    valid[rows, slot] = True
    return packed, valid


def _count_at_or_above(values: Tensor, thresholds: Tensor) -> Tensor:
    """(B, N) values, (B, K) thresholds (any order; -inf allowed) -> (B, K) #{values >= threshold}.

    Bins the N values among the K thresholds (`searchsorted`, O(N log K)) and sums the bins from the top,
    instead of sorting all N values.
    """
    order = thresholds.sort(dim=1)
    ascending = order.values.contiguous()
    n_thresholds = thresholds.shape[1]
    # bin m = number of thresholds <= value; a value is >= ascending[j] exactly when its bin is > j.
    bins = torch.searchsorted(ascending, values.contiguous(), right=True)
    histogram = torch.zeros(values.shape[0], n_thresholds + 1, dtype=torch.int64, device=values.device)
    histogram.scatter_add_(1, bins, torch.ones_like(bins))
    above_sorted = histogram.flip(1).cumsum(1).flip(1)[:, 1:]  # [j] = #bins > j
    counts = torch.empty_like(above_sorted)
    counts.scatter_(1, order.indices, above_sorted)
    return counts


def _uniform(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None, device: torch.device,
             dtype: torch.dtype = torch.float64) -> Tensor:
    """U[0, 1) drawn from `generator` (on its own device, so a CPU seed gives the same numbers anywhere)."""
    source = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, dtype=dtype, device=source).to(device)


def _roc_area(tp: Tensor, fp: Tensor) -> Tensor:
    """Trapezoid area of (..., P) ROC points with (0, 0) prepended and (1, 1) appended."""
    zeros = torch.zeros_like(tp[..., :1])
    ones = torch.ones_like(tp[..., :1])
    tp = torch.cat([zeros, tp, ones], dim=-1)
    fp = torch.cat([zeros, fp, ones], dim=-1)
    return torch.trapezoid(tp, fp, dim=-1)


def shuffled_auc_samples(
    fixations: Tensor, other: Tensor, n_splits: int = SHUFFLED_AUC_SPLITS, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Random "other" fixations for s-AUC: per map and split, N' = min(Nf, #other) entries drawn without
    replacement from the pool of negatives (`randperm(ind)(1:N')`).

    `other` holds how many negatives lie on each pixel. A boolean map is the pool of its set pixels, each
    once (`ind = find(otherMap > 0)`, as the MIT and STAViS code build it from a binary union); an integer
    map of fixation counts keeps every fixation, so a spot many observers fixated is as likely to be drawn
    as it was to be fixated.

    Returns (indices (B, n_splits, K) into the flattened map, mask (B, n_splits, K)) with K = max N'.
    """
    batch = fixations.shape[0]
    fixated = fixations.reshape(batch, -1) != 0
    counts = other.reshape(batch, -1)
    rows, cols = counts.nonzero(as_tuple=True)
    if counts.dtype != torch.bool:  # a pixel holding c negatives enters the pool c times
        repeats = counts[rows, cols].long()
        rows, cols = rows.repeat_interleave(repeats), cols.repeat_interleave(repeats)
    n_other = torch.bincount(rows, minlength=batch)
    n_draw = torch.minimum(fixated.sum(dim=1), n_other)
    max_other = int(n_other.max()) if batch else 0
    max_draw = int(n_draw.max()) if batch else 0
    device = fixations.device
    if max_draw == 0:
        empty = torch.zeros(batch, n_splits, 0, dtype=torch.long, device=device)
        return empty, empty.bool()
    other_index, _ = _pack(rows, cols, batch, max_other)
    chosen = _distinct_draws(n_other, n_draw, n_splits, max_draw, generator, device)
    indices = torch.gather(other_index.unsqueeze(1).expand(-1, n_splits, -1), 2, chosen)
    mask = (torch.arange(max_draw, device=device) < n_draw.view(batch, 1, 1)).expand(-1, n_splits, -1)
    return indices, mask


def _distinct_draws(n_pool: Tensor, n_draw: Tensor, n_splits: int, width: int, generator: torch.Generator | None,
                    device: torch.device) -> Tensor:
    """(B, n_splits, width) positions in [0, n_pool[b]), distinct within each (b, split) over the first
    n_draw[b] slots: a uniformly random n_draw-subset of the pool per split.

    Rows drawing at most half their pool: draw with replacement, then redraw the later copy of every
    repeated position until none is left. The procedure treats all pool elements alike, so every subset
    is equally likely, and it costs O(n_draw) per split instead of O(pool) (pools of "other" fixations
    hold thousands of pixels, draws tens). Denser rows take the smallest of n_pool random keys (a partial
    random permutation), whose cost is then bounded by 2 n_draw.
    """
    batch = n_pool.shape[0]
    slot = torch.arange(width, device=device)
    valid = (slot < n_draw.view(batch, 1, 1)).expand(batch, n_splits, width)
    pool = n_pool.view(batch, 1, 1).to(torch.float64)
    positions = (_uniform((batch, n_splits, width), generator, device) * pool).long()
    dense = (2 * n_draw > n_pool) & (n_draw > 0)
    for _ in range(200):
        # Unused slots get distinct negative values so they never count as repeats.
        keyed = torch.where(valid, positions, -1 - slot)
        ordered, order = keyed.sort(dim=2, stable=True)
        repeated_sorted = torch.zeros_like(valid)
        repeated_sorted[..., 1:] = ordered[..., 1:] == ordered[..., :-1]
        repeated = torch.zeros_like(valid).scatter_(2, order, repeated_sorted) & ~dense.view(batch, 1, 1)
        if not bool(repeated.any()):
            break
        fresh = (_uniform((batch, n_splits, width), generator, device) * pool).long()
        positions = torch.where(repeated, fresh, positions)
    if bool(dense.any()):
        rows = dense.nonzero().squeeze(1)
        dense_pool = int(n_pool[rows].max())
        keys = _uniform((rows.numel(), n_splits, dense_pool), generator, device, torch.float32)
        keys = torch.where(torch.arange(dense_pool, device=device) < n_pool[rows].view(-1, 1, 1), keys, torch.inf)
        positions[rows] = keys.topk(width, dim=2, largest=False).indices if dense_pool >= width else \
            torch.nn.functional.pad(keys.argsort(dim=2), (0, width - dense_pool))
    return torch.where(valid, positions, 0)


def auc_shuffled(
    saliency: Tensor,
    fixations: Tensor,
    other: Tensor,
    n_splits: int = SHUFFLED_AUC_SPLITS,
    step: float = SHUFFLED_AUC_STEP,
    generator: torch.Generator | None = None,
    samples: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Shuffled AUC (`AUC_shuffled.m`): fixated values against values at other fixations' pixels.

    The map is min-max normalised; per split, N' random pixels of `other` (see `shuffled_auc_samples`,
    or pass `samples`) are the negatives; thresholds run 1, 1 - step, ..., 0 (MATLAB's
    `fliplr(0:step:max)`: thresholds above the maximum add only (0, 0) points); tp and fp are the
    fractions of fixated and sampled values at or above each; the score is the mean area over splits.
    NaN without fixations, without other fixations, or for a constant map.
    """
    samples = samples if samples is not None else shuffled_auc_samples(fixations, other, n_splits, generator)
    return _auc_shuffled(_flat(saliency), fixations.reshape(fixations.shape[0], -1) != 0, samples, step)


def _auc_shuffled(sal: Tensor, fixated: Tensor, samples: tuple[Tensor, Tensor], step: float,
                  bounds: Bounds | None = None) -> Tensor:
    sal = _minmax(sal, bounds)
    batch = sal.shape[0]
    indices, mask = samples
    n_thresholds = int(math.floor(1.0 / step + 1e-9)) + 1
    thresholds = torch.arange(n_thresholds - 1, -1, -1, dtype=torch.float64, device=sal.device) * step  # descending
    n_fix = fixated.sum(dim=1)
    constant = torch.isnan(sal[:, 0]) if sal.shape[1] else torch.ones(batch, dtype=torch.bool, device=sal.device)
    fixated_values, is_fixation = _values_at(sal, fixated, max(1, int(n_fix.max()) if batch else 1))
    fixated_above = (fixated_values.unsqueeze(1) >= thresholds.view(1, -1, 1)) & is_fixation.unsqueeze(1)  # (B, T, Nf)
    n_fix = n_fix.to(torch.float64)
    tp = fixated_above.sum(dim=2).to(torch.float64) / n_fix.unsqueeze(1)  # (B, T)
    drawn = torch.gather(sal.unsqueeze(1).expand(-1, indices.shape[1], -1), 2, indices)  # (B, S, K)
    drawn_above = (drawn.unsqueeze(2) >= thresholds.view(1, 1, -1, 1)) & mask.unsqueeze(2)  # (B, S, T, K)
    n_drawn = mask.sum(dim=2, keepdim=True).to(torch.float64)  # (B, S, 1)
    fp = drawn_above.sum(dim=3).to(torch.float64) / n_drawn  # (B, S, T)
    area = _roc_area(tp.unsqueeze(1).expand_as(fp), fp).mean(dim=1)
    undefined = constant | (n_fix == 0) | (n_drawn[:, 0, 0] == 0)
    return torch.where(undefined, torch.nan, area)


METRICS: tuple[str, ...] = ("CC", "NSS", "AUC-J", "s-AUC", "SIM", "KLD")
FIXATION_METRICS: frozenset[str] = frozenset({"NSS", "AUC-J", "s-AUC"})  # against the binary fixation map
DENSITY_METRICS: frozenset[str] = frozenset({"CC", "SIM", "KLD"})  # against the continuous density
LOWER_IS_BETTER: frozenset[str] = frozenset({"KLD"})


@dataclass(frozen=True)
class Reference:
    """The ground truth's side of every metric for a batch of items, computed once and shared by every map
    scored against it (the rows of a report): the density centred (CC) and normalised (SIM, KLD), and
    the fixated pixels (NSS, AUC-Judd, s-AUC). All (B, N) over the flattened pixels."""

    fixated: Tensor
    centred: Tensor
    spread: Tensor  # (B,) root of the centred density's sum of squares; NaN for a constant density
    sim_distribution: Tensor
    kld_distribution: Tensor

    @classmethod
    def of(cls, density: Tensor, fixations: Tensor) -> Reference:
        gt = _flat(density)
        centred, spread = _centred(gt)
        return cls(fixations.reshape(fixations.shape[0], -1) != 0, centred, spread, _sim_distribution(gt),
                   _kld_distribution(gt))


@dataclass(frozen=True)
class Draws:
    """The random draws of a batch of items: AUC-Judd's tie-breaking noise (B, N) of U[0, 1) (None: no
    jitter) and the s-AUC negatives (indices, mask) of `shuffled_auc_samples`. Every map scored against
    the same draws sees the same negatives and the same noise, so two rows differ by their maps alone."""

    noise: Tensor | None
    indices: Tensor
    mask: Tensor

    def __getitem__(self, rows: slice) -> Draws:
        return Draws(None if self.noise is None else self.noise[rows], self.indices[rows], self.mask[rows])


def draw(fixations: Tensor, other: Tensor, n_splits: int = SHUFFLED_AUC_SPLITS,
         generator: torch.Generator | Sequence[torch.Generator] | None = None, jitter: bool = True) -> Draws:
    """Draws for a batch: from one generator for the whole batch, or from one generator per item (then an
    item's draws depend on its own generator alone, not on the batch it was scored in)."""
    if generator is None or isinstance(generator, torch.Generator):
        shape = (fixations.shape[0], math.prod(fixations.shape[1:]))
        noise = _uniform(shape, generator, fixations.device) if jitter else None
        return Draws(noise, *shuffled_auc_samples(fixations, other, n_splits, generator))
    if len(generator) != fixations.shape[0]:
        raise ValueError(f"{len(generator)} generators for {fixations.shape[0]} items")
    # Per item: a loop over a batch's items for the random numbers only (tens of items, no map work).
    items = [draw(fixations[b : b + 1], other[b : b + 1], n_splits, g, jitter) for b, g in enumerate(generator)]
    width = max(d.indices.shape[2] for d in items) if items else 0
    pad = [(0, width - d.indices.shape[2]) for d in items]
    indices = torch.cat([F.pad(d.indices, p) for d, p in zip(items, pad)])
    mask = torch.cat([F.pad(d.mask, p) for d, p in zip(items, pad)])
    noise = torch.cat([d.noise for d in items]) if jitter and items else None
    return Draws(noise, indices, mask)


def score(saliency: Tensor, reference: Reference, draws: Draws, step: float = SHUFFLED_AUC_STEP) -> dict[str, Tensor]:
    """Every metric of `METRICS` for (B, H, W) maps against a prepared reference and shared draws."""
    sal = _flat(saliency)
    bounds = _row_range(sal)  # one pass for the four metrics that need the map's range
    return {
        "CC": _cc(sal, reference.centred, reference.spread, bounds),
        "NSS": _nss(sal, reference.fixated, bounds),
        "AUC-J": _auc_judd(sal, reference.fixated, draws.noise),
        "s-AUC": _auc_shuffled(sal, reference.fixated, (draws.indices, draws.mask), step, bounds),
        "SIM": _sim(sal, reference.sim_distribution, bounds),
        "KLD": _kld(sal, reference.kld_distribution),
    }


def score_rows(maps: Mapping[str, Tensor], density: Tensor, fixations: Tensor, draws: Draws,
               chunk_pixels: int = CHUNK_PIXELS) -> dict[str, dict[str, Tensor]]:
    """Every metric of every row's (B, H, W) maps, all against the same ground truth and the same draws.

    The batch is scored in slices of about `chunk_pixels` pixels, the ground truth prepared once per
    slice and shared by the rows: each metric makes several passes over its maps, and on a CPU a slice
    that stays in the cache between passes is over twice as fast as one pass over the whole batch
    (benchmarks/evaluate_scene.py); on a GPU pass a large value.
    """
    batch = density.shape[0]
    per_chunk = max(1, chunk_pixels // max(1, density.shape[-2] * density.shape[-1]))
    parts: dict[str, dict[str, list[Tensor]]] = {row: {name: [] for name in METRICS} for row in maps}
    for start in range(0, batch, per_chunk):
        rows = slice(start, start + per_chunk)
        reference = Reference.of(density[rows], fixations[rows])
        for row, saliency in maps.items():
            for name, values in score(saliency[rows], reference, draws[rows]).items():
                parts[row][name].append(values)
    empty = torch.empty(0, dtype=torch.float64, device=density.device)
    return {row: {name: torch.cat(values) if values else empty for name, values in by_metric.items()}
            for row, by_metric in parts.items()}


def all_metrics(
    saliency: Tensor,
    density: Tensor,
    fixations: Tensor,
    other: Tensor,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    n_splits: int = SHUFFLED_AUC_SPLITS,
    jitter: bool = True,
    chunk_pixels: int = CHUNK_PIXELS,
) -> dict[str, Tensor]:
    """Every metric of `METRICS` for a batch of maps already at the ground truth's size (`score_rows`
    for one row, with fresh draws)."""
    draws = draw(fixations, other, n_splits, generator, jitter)
    return score_rows({"map": saliency}, density, fixations, draws, chunk_pixels)["map"]

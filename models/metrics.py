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
    the same result.
    """
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel_1d(sigma, maps.dtype, maps.device).tolist()
    down = _filter_rows(maps, kernel)
    return _filter_rows(down.transpose(-1, -2).contiguous(), kernel).transpose(-1, -2).contiguous()


def _filter_rows(maps: Tensor, kernel: list[float]) -> Tensor:
    """1-D filter along dim -2 with symmetric borders, as in-place weighted sums of shifted row blocks:
    exact in float64, and far faster on the CPU than a float64 conv2d."""
    height = maps.shape[-2]
    padded = maps.index_select(-2, _symmetric_index(height, len(kernel) // 2, maps.device))
    out = torch.zeros_like(maps)
    for offset, weight in enumerate(kernel):
        out.add_(padded[..., offset : offset + height, :], alpha=weight)
    return out


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


def _minmax(values: Tensor) -> Tensor:
    """(B, N) -> (x - min) / (max - min) per row; NaN for a constant row, as MATLAB's 0/0."""
    low, high = _row_range(values)
    scale = 1.0 / (high - low)  # inf for a constant row: 0 * inf = NaN below, as in MATLAB
    return torch.addcmul(-low * scale, values, scale)


def _is_constant(values: Tensor) -> Tensor:
    """(B,) rows with a single value, or with a NaN (aminmax propagates it)."""
    low, high = _row_range(values)
    return ((high == low) | torch.isnan(high)).squeeze(1)


def cc(saliency: Tensor, density: Tensor) -> Tensor:
    """Pearson correlation of the maps (`CC.m` z-scores both, then `corr2`: the z-scoring changes nothing
    but makes a constant map NaN, kept here)."""
    sal = _flat(saliency)
    gt = _flat(density)
    undefined = _is_constant(sal) | _is_constant(gt)
    sal = sal - sal.mean(dim=1, keepdim=True)
    gt = gt - gt.mean(dim=1, keepdim=True)
    score = (sal * gt).sum(dim=1) / torch.sqrt(sal.square().sum(dim=1) * gt.square().sum(dim=1))
    return torch.where(undefined, torch.nan, score)


def nss(saliency: Tensor, fixations: Tensor) -> Tensor:
    """Mean of the z-scored map at the fixated pixels (`NSS.m`); NaN without fixations."""
    sal = _flat(saliency)
    fixated = fixations.reshape(fixations.shape[0], -1) != 0
    std, mean = torch.std_mean(sal, dim=1, correction=1)
    std = torch.where(_is_constant(sal), torch.nan, std)
    # mean of (x - mean) / std over the fixations = (mean of x over the fixations - mean) / std
    n_fix = fixated.sum(dim=1)
    at_fixations = torch.where(fixated, sal, 0.0).sum(dim=1) / n_fix
    return (at_fixations - mean) / std


def _sum_to_one_if_any(values: Tensor) -> Tensor:
    """`if any(map) map = map / sum(map)` for non-negative rows: all-zero rows stay zero."""
    total = values.sum(dim=1, keepdim=True)
    return values / torch.where(total > 0, total, 1.0)


def _sim_distribution(values: Tensor) -> Tensor:
    """`similarity.m`'s normalisation: if any(map), min-max then divide by the sum (NaN if constant)."""
    low, high = _row_range(values)
    all_zero = (low == 0) & (high == 0)
    constant = (high == low) & ~all_zero
    # (x - min) / (max - min) / sum((x - min) / (max - min)) = (x - min) / (sum(x) - N min)
    denominator = values.sum(dim=1, keepdim=True) - values.shape[1] * low
    denominator = torch.where(all_zero, 1.0, torch.where(constant, torch.nan, denominator))
    return (values - torch.where(all_zero, 0.0, low)) / denominator


def sim(saliency: Tensor, density: Tensor) -> Tensor:
    """Histogram intersection of the two maps, each min-max normalised then summing to 1 (`similarity.m`)."""
    return torch.minimum(_sim_distribution(_flat(saliency)), _sim_distribution(_flat(density))).sum(dim=1)


def kld(saliency: Tensor, density: Tensor) -> Tensor:
    """KL divergence of the ground-truth distribution from the map's (`KLdiv.m`), lower is better.

    Both maps are divided by their sums; score = sum(gt * log(eps + gt / (map + eps))) with MATLAB's eps.
    Bicubic resizing can leave tiny negative values, where MATLAB's log would turn complex; the map is
    clipped at zero first.
    """
    sal = _sum_to_one_if_any(_flat(saliency).clamp_min(0.0))
    gt = _sum_to_one_if_any(_flat(density).clamp_min(0.0))
    return (gt * torch.log(MATLAB_EPS + gt / (sal + MATLAB_EPS))).sum(dim=1)


def auc_judd(saliency: Tensor, fixations: Tensor, jitter: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """AUC-Judd (`AUC_Judd.m`): one ROC point per fixation, thresholds at the fixated values.

    With `jitter`, uniform noise in [0, 1e-7) breaks ties first (seed it through `generator`). For the
    i-th largest fixated value t_i: tp = i / Nf, fp = (#{pixels >= t_i} - i) / (Npix - Nf); the curve runs
    from (0, 0) to (1, 1) and its trapezoid area is the score. The counts come from binning all pixels
    among the thresholds (`searchsorted`); rows are padded with (1, 1) points, which add no area.
    """
    sal = _flat(saliency)
    fixated = fixations.reshape(fixations.shape[0], -1) != 0
    batch, n_pixels = sal.shape
    if jitter:
        sal = sal + _uniform(sal.shape, generator, sal.device) * AUC_JUDD_JITTER
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
    batch = values.shape[0]
    rows, cols = mask.nonzero(as_tuple=True)  # row-major: rows ascending, columns ascending within a row
    per_row = torch.bincount(rows, minlength=batch)
    row_start = torch.cumsum(per_row, dim=0) - per_row
    slot = torch.arange(rows.numel(), device=values.device) - row_start[rows]
    packed = torch.zeros(batch, width, dtype=values.dtype, device=values.device)
    valid = torch.zeros(batch, width, dtype=torch.bool, device=values.device)
    packed[rows, slot] = values[rows, cols]
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
    """Random "other" fixation pixels for s-AUC: per map and split, N' = min(Nf, #other) distinct pixels
    drawn uniformly from the non-zero pixels of `other` (`randperm(ind)(1:N')`).

    Returns (indices (B, n_splits, K) into the flattened map, mask (B, n_splits, K)) with K = max N'.
    """
    batch = fixations.shape[0]
    fixated = fixations.reshape(batch, -1) != 0
    others = other.reshape(batch, -1) != 0
    n_other = others.sum(dim=1)
    n_draw = torch.minimum(fixated.sum(dim=1), n_other)
    max_other = int(n_other.max()) if batch else 0
    max_draw = int(n_draw.max()) if batch else 0
    device = fixations.device
    if max_draw == 0:
        empty = torch.zeros(batch, n_splits, 0, dtype=torch.long, device=device)
        return empty, empty.bool()
    pixel_index = torch.arange(others.shape[1], device=device).expand(batch, -1)
    other_index, _ = _values_at(pixel_index, others, max_other)
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
    sal = _minmax(_flat(saliency))
    batch = sal.shape[0]
    fixated = fixations.reshape(batch, -1) != 0
    indices, mask = samples if samples is not None else shuffled_auc_samples(fixations, other, n_splits, generator)
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


def all_metrics(
    saliency: Tensor,
    density: Tensor,
    fixations: Tensor,
    other: Tensor,
    generator: torch.Generator | None = None,
    n_splits: int = SHUFFLED_AUC_SPLITS,
    jitter: bool = True,
    chunk_pixels: int = CHUNK_PIXELS,
) -> dict[str, Tensor]:
    """Every metric of `METRICS` for a batch of maps already at the ground truth's size.

    The batch is scored in slices of about `chunk_pixels` pixels: each metric makes several passes over
    its maps, and on a CPU a slice that stays in the cache between passes is over twice as fast as one
    pass over the whole batch (benchmarks/evaluate_scene.py); on a GPU pass a large value.
    """
    per_chunk = max(1, chunk_pixels // max(1, saliency.shape[-2] * saliency.shape[-1]))
    parts: dict[str, list[Tensor]] = {name: [] for name in METRICS}
    for start in range(0, saliency.shape[0], per_chunk):
        rows = slice(start, start + per_chunk)
        sal, gt, fix, oth = saliency[rows], density[rows], fixations[rows], other[rows]
        scores = {
            "CC": cc(sal, gt),
            "NSS": nss(sal, fix),
            "AUC-J": auc_judd(sal, fix, jitter=jitter, generator=generator),
            "s-AUC": auc_shuffled(sal, fix, oth, n_splits=n_splits, generator=generator),
            "SIM": sim(sal, gt),
            "KLD": kld(sal, gt),
        }
        for name, values in scores.items():
            parts[name].append(values)
    return {name: torch.cat(values) if values else torch.empty(0, dtype=torch.float64, device=saliency.device)
            for name, values in parts.items()}

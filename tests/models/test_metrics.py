"""models/metrics.py against plain loop restatements of the MIT benchmark definitions (SPEC §5.3) and
against hand-computed tiny cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import torch

from models import metrics

# --- loop restatements of the MATLAB definitions (one map at a time, no vectorisation) -------------


def ref_cc(sal: np.ndarray, gt: np.ndarray) -> float:
    a = (sal - sal.mean()) / sal.std(ddof=1)
    b = (gt - gt.mean()) / gt.std(ddof=1)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))


def ref_nss(sal: np.ndarray, fix: np.ndarray) -> float:
    z = (sal - sal.mean()) / sal.std(ddof=1)
    values = [z[r, c] for r in range(fix.shape[0]) for c in range(fix.shape[1]) if fix[r, c]]
    return float(sum(values) / len(values))


def ref_sim(sal: np.ndarray, gt: np.ndarray) -> float:
    def norm(m: np.ndarray) -> np.ndarray:
        if m.any():
            m = (m - m.min()) / (m.max() - m.min())
            m = m / m.sum()
        return m

    a, b = norm(sal.copy()), norm(gt.copy())
    return float(sum(min(a.flat[i], b.flat[i]) for i in range(a.size)))


def ref_kld(sal: np.ndarray, gt: np.ndarray) -> float:
    eps = np.finfo(float).eps
    a = sal / sal.sum() if sal.any() else sal
    b = gt / gt.sum() if gt.any() else gt
    return float(sum(b.flat[i] * math.log(eps + b.flat[i] / (a.flat[i] + eps)) for i in range(a.size)))


def ref_auc_judd(sal: np.ndarray, fix: np.ndarray) -> float:
    """AUC_Judd.m without jitter: a threshold per fixation, counts by loops."""
    s = (sal - sal.min()) / (sal.max() - sal.min())
    values = s.ravel()
    fixated = fix.ravel() > 0
    sth = sorted((values[i] for i in range(values.size) if fixated[i]), reverse=True)
    n_fix, n_pix = len(sth), values.size
    tp, fp = [0.0], [0.0]
    for i, thresh in enumerate(sth, start=1):
        above = sum(1 for v in values if v >= thresh)
        tp.append(i / n_fix)
        fp.append((above - i) / (n_pix - n_fix))
    tp.append(1.0)
    fp.append(1.0)
    return float(sum((fp[k + 1] - fp[k]) * (tp[k + 1] + tp[k]) / 2 for k in range(len(tp) - 1)))


def ref_auc_shuffled(sal: np.ndarray, fix: np.ndarray, random_sets: list[list[int]], step: float = 0.1) -> float:
    """AUC_shuffled.m given the random pixel sets of every split (the randperm draws)."""
    s = ((sal - sal.min()) / (sal.max() - sal.min())).ravel()
    sth = [s[i] for i in range(s.size) if fix.ravel()[i] > 0]
    aucs = []
    for chosen in random_sets:
        curfix = [s[i] for i in chosen]
        top = max(sth + curfix)
        threshes = []
        k = 0
        while k * step <= top + 1e-12:
            threshes.append(k * step)
            k += 1
        tp, fp = [0.0], [0.0]
        for thresh in reversed(threshes):
            tp.append(sum(1 for v in sth if v >= thresh) / len(sth))
            fp.append(sum(1 for v in curfix if v >= thresh) / len(curfix))
        tp.append(1.0)
        fp.append(1.0)
        aucs.append(sum((fp[k + 1] - fp[k]) * (tp[k + 1] + tp[k]) / 2 for k in range(len(tp) - 1)))
    return float(np.mean(aucs))


def ref_postprocess(pred: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """postprocessMap.m + normalizeImage1.m + fspecial/imfilter('symmetric','conv') via scipy."""
    x = np.clip(255 * pred, 0, 255)
    x = x / x.max() * 255
    x = (x - x.min()) / (x.max() - x.min())
    radius = math.ceil(3 * sigma)
    ax = np.arange(-radius, radius + 1)
    kernel = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma**2))
    kernel /= kernel.sum()
    # scipy's 'reflect' mode is MATLAB's 'symmetric' (edge sample repeated).
    return scipy.ndimage.convolve(x, kernel, mode="reflect")


# --- fixtures ---------------------------------------------------------------------------------------


def random_case(seed: int, batch: int = 3, size: tuple[int, int] = (18, 23), n_fix: int = 9):
    rng = np.random.default_rng(seed)
    sal = rng.random((batch, *size))
    density = scipy.ndimage.gaussian_filter(rng.random((batch, *size)), (0, 2, 2))
    fix = np.zeros((batch, *size), dtype=bool)
    for b in range(batch):
        flat = rng.choice(size[0] * size[1], size=n_fix + b, replace=False)
        fix[b].flat[flat] = True
    return sal, density, fix


def t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


# --- tests ------------------------------------------------------------------------------------------


def test_cc_nss_sim_kld_match_loop_restatements_on_random_maps():
    sal, density, fix = random_case(0)
    scores = {
        "CC": metrics.cc(t(sal), t(density)),
        "NSS": metrics.nss(t(sal), t(fix)),
        "SIM": metrics.sim(t(sal), t(density)),
        "KLD": metrics.kld(t(sal), t(density)),
    }
    refs = {"CC": ref_cc, "NSS": ref_nss, "SIM": ref_sim, "KLD": ref_kld}
    for name, values in scores.items():
        assert values.dtype == torch.float64 and values.shape == (3,)
        gt = density if name != "NSS" else fix
        expected = [refs[name](sal[b], gt[b]) for b in range(3)]
        np.testing.assert_allclose(values.numpy(), expected, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("quantised", [False, True])
def test_auc_judd_matches_loop_restatement(quantised):
    sal, _, fix = random_case(1, batch=4)
    if quantised:  # uint8-like maps: many ties between fixated and other pixels
        sal = np.round(sal * 6) / 6
    got = metrics.auc_judd(t(sal), t(fix), jitter=False)
    expected = [ref_auc_judd(sal[b], fix[b]) for b in range(4)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


def test_auc_judd_jitter_is_seeded_and_only_breaks_ties():
    sal, _, fix = random_case(2, batch=2)
    plain = metrics.auc_judd(t(sal), t(fix), jitter=False)
    first = metrics.auc_judd(t(sal), t(fix), generator=torch.Generator().manual_seed(5))
    again = metrics.auc_judd(t(sal), t(fix), generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    np.testing.assert_allclose(first.numpy(), plain.numpy(), atol=1e-6)


def test_shuffled_auc_matches_loop_restatement_with_the_same_draws():
    sal, _, fix = random_case(3, batch=3, n_fix=7)
    rng = np.random.default_rng(9)
    other = rng.random(fix.shape) < 0.15
    other &= ~fix
    samples = metrics.shuffled_auc_samples(t(fix), t(other), n_splits=6, generator=torch.Generator().manual_seed(1))
    got = metrics.auc_shuffled(t(sal), t(fix), t(other), samples=samples)
    indices, mask = samples
    for b in range(3):
        sets = [indices[b, s][mask[b, s]].tolist() for s in range(6)]
        n_expected = min(int(fix[b].sum()), int(other[b].sum()))
        for chosen in sets:  # draws: N' distinct pixels, all on the other map
            assert len(chosen) == n_expected == len(set(chosen))
            assert all(other[b].flat[i] for i in chosen)
        assert got[b].item() == pytest.approx(ref_auc_shuffled(sal[b], fix[b], sets), abs=1e-12)


@pytest.mark.parametrize("n_fix", [2, 4, 5, 7])  # redraw path (2 of 5), keys path (4 of 5), the whole pool
def test_shuffled_auc_sampler_draws_uniform_distinct_subsets(n_fix):
    fix = torch.zeros(1, 4, 5, dtype=torch.bool)
    fix.view(-1)[:n_fix] = True
    other = torch.zeros(1, 4, 5, dtype=torch.bool)
    other[0, 3, :] = True  # 5 candidates: flat pixels 15..19
    n_draw = min(n_fix, 5)
    indices, mask = metrics.shuffled_auc_samples(fix, other, n_splits=4000, generator=torch.Generator().manual_seed(0))
    assert indices.shape == (1, 4000, n_draw) and bool(mask.all())
    assert bool(((indices >= 15) & (indices <= 19)).all())
    assert all(len(set(row)) == n_draw for row in indices[0].tolist())  # without replacement
    counts = torch.bincount(indices.flatten(), minlength=20)[15:].double()
    np.testing.assert_allclose((counts / counts.sum()).numpy(), 0.2, atol=0.015)
    if n_draw == 2:  # every one of the 10 pairs equally likely, not only every pixel
        pairs = torch.bincount((indices[0].sort(dim=1).values - 15) @ torch.tensor([5, 1]), minlength=25).double()
        assert int((pairs > 0).sum()) == 10
        np.testing.assert_allclose((pairs[pairs > 0] / 4000).numpy(), 0.1, atol=0.02)


def test_shuffled_auc_sampler_mixes_row_sizes_in_one_batch():
    fix = torch.zeros(3, 30, 40, dtype=torch.bool)
    fix[0].view(-1)[:25] = True
    fix[1].view(-1)[:3] = True
    other = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(2)) < torch.tensor([0.5, 0.002, 0.0]).view(3, 1, 1)
    indices, mask = metrics.shuffled_auc_samples(fix, other, n_splits=50, generator=torch.Generator().manual_seed(3))
    n_other = other.flatten(1).sum(dim=1)
    assert mask[:, 0].sum(dim=1).tolist() == [25, min(3, int(n_other[1])), 0]
    for b in range(2):
        for s in range(50):
            chosen = indices[b, s][mask[b, s]].tolist()
            assert len(set(chosen)) == len(chosen) and all(other[b].view(-1)[i] for i in chosen)


def test_hand_computed_tiny_cases():
    # 1 x 4 map [0, 1, 2, 3] with the fixation on the largest value: AUC-Judd = 1, NSS = z-score of 3.
    sal = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]], dtype=torch.float64)
    fix = torch.tensor([[[False, False, False, True]]])
    assert metrics.auc_judd(sal, fix, jitter=False).item() == pytest.approx(1.0)
    assert metrics.nss(sal, fix).item() == pytest.approx((3 - 1.5) / np.std([0, 1, 2, 3], ddof=1))
    # On the second-lowest value: tp = 1 at fp = (3 - 1) / 3, area = 1 - 2/3 / 2 = 2/3.
    fix2 = torch.tensor([[[False, True, False, False]]])
    assert metrics.auc_judd(sal, fix2, jitter=False).item() == pytest.approx(1 - (2 / 3) / 2)
    # A map equal to the density: CC = 1, SIM = 1, KLD = 0.
    density = torch.tensor([[[0.1, 0.5, 1.0, 0.2]]], dtype=torch.float64)
    assert metrics.cc(density, density).item() == pytest.approx(1.0)
    assert metrics.sim(density, density).item() == pytest.approx(1.0)
    assert metrics.kld(density, density).item() == pytest.approx(0.0, abs=1e-12)
    # SIM of disjoint supports is 0; an inverted map has CC = -1.
    assert metrics.sim(torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]), torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])).item() == 0
    assert metrics.cc(1 - density, density).item() == pytest.approx(-1.0)
    # s-AUC: fixation on 3, the one other fixation on 0 -> perfectly separated at every split -> 1.
    other = torch.tensor([[[True, False, False, False]]])
    assert metrics.auc_shuffled(sal, fix, other, n_splits=3).item() == pytest.approx(1.0)
    # ... and when the other fixation sits on the same value the ROC is the diagonal -> 0.5.
    sal_tie = torch.tensor([[[3.0, 1.0, 2.0, 3.0]]], dtype=torch.float64)
    assert metrics.auc_shuffled(sal_tie, fix, other, n_splits=3).item() == pytest.approx(0.5)


def test_constant_map_has_auc_judd_one_half_and_undefined_cases_are_nan():
    constant = torch.full((1, 60, 80), 0.7, dtype=torch.float64)
    fix = torch.rand(1, 60, 80, generator=torch.Generator().manual_seed(0)) < 0.05
    assert metrics.auc_judd(constant, fix, generator=torch.Generator().manual_seed(1)).item() == pytest.approx(0.5, abs=0.03)
    assert math.isnan(metrics.cc(constant, torch.rand(1, 60, 80, dtype=torch.float64)).item())
    assert math.isnan(metrics.nss(constant, fix).item())
    no_fix = torch.zeros_like(fix)
    sal = torch.rand(1, 60, 80, dtype=torch.float64)
    assert math.isnan(metrics.auc_judd(sal, no_fix).item())
    assert math.isnan(metrics.nss(sal, no_fix).item())
    assert math.isnan(metrics.auc_shuffled(sal, fix, no_fix).item())  # no other fixations
    assert math.isnan(metrics.auc_shuffled(sal, no_fix, fix).item())


def test_postprocess_map_matches_matlab_restatement():
    rng = np.random.default_rng(4)
    preds = rng.random((2, 21, 30)) * 0.8
    got = metrics.postprocess_map(t(preds), sigma=2.0)
    for b in range(2):
        np.testing.assert_allclose(got[b].numpy(), ref_postprocess(preds[b]), atol=1e-12)
    # A map smaller than the kernel radius still mirrors correctly (padding wraps the mirror).
    small = rng.random((1, 4, 5))
    np.testing.assert_allclose(metrics.postprocess_map(t(small))[0].numpy(), ref_postprocess(small[0]), atol=1e-12)
    # All-zero -> NaN (MATLAB's 0/0); constant non-zero -> 0.5 everywhere (normalizeImage1).
    special = metrics.postprocess_map(torch.stack([torch.zeros(6, 7), torch.full((6, 7), 0.3)]).double())
    assert torch.isnan(special[0]).all() and torch.allclose(special[1], torch.full((6, 7), 0.5, dtype=torch.float64))
    assert metrics.empty_maps(torch.stack([torch.zeros(6, 7), torch.full((6, 7), 0.3)])).tolist() == [True, False]


def ref_imresize_1d(values: np.ndarray, out_len: int) -> np.ndarray:
    """MATLAB `imresize` along one axis (bicubic, a = -0.5, kernel widened by 1/scale when shrinking,
    'symmetric' mirroring at the borders), restated from its documented algorithm."""
    def cubic(x: np.ndarray) -> np.ndarray:
        ax = np.abs(x)
        return (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1) + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))

    n = len(values)
    scale = out_len / n
    width = 4.0 / scale if scale < 1 else 4.0
    mirror = np.concatenate([np.arange(n), np.arange(n - 1, -1, -1)])
    out = np.empty(out_len)
    for i in range(out_len):
        u = (i + 1) / scale + 0.5 * (1 - 1 / scale)  # 1-based output pixel -> 1-based input coordinate
        taps = np.floor(u - width / 2) + np.arange(int(np.ceil(width)) + 2)
        weights = scale * cubic(scale * (u - taps)) if scale < 1 else cubic(u - taps)
        weights /= weights.sum()
        out[i] = (weights * values[mirror[np.mod(taps - 1, 2 * n).astype(int)]]).sum()
    return out


@pytest.mark.parametrize(("in_size", "out_size"), [((15, 22), (30, 70)), ((60, 66), (19, 21))])  # up, down
def test_resize_matches_matlab_imresize_away_from_the_border(in_size, out_size):
    maps = torch.rand(1, *in_size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = metrics.resize_maps(maps, out_size)[0].numpy()
    columns = np.stack([ref_imresize_1d(row, out_size[1]) for row in maps[0].numpy()])
    expected = np.stack([ref_imresize_1d(col, out_size[0]) for col in columns.T]).T
    # Identical inside; within the kernel's reach of the border MATLAB mirrors the image where torch
    # renormalises the truncated kernel (the documented difference).
    margins = []
    for n_in, n_out in zip(in_size, out_size):
        scale = n_out / n_in
        margins.append(math.ceil((2 / min(scale, 1.0) + 1) * scale) + 1)
    inner = (slice(margins[0], -margins[0]), slice(margins[1], -margins[1]))
    np.testing.assert_allclose(got[inner], expected[inner], atol=1e-12)
    assert np.abs(got - expected).max() < 0.15


def test_resize_is_antialiased_bicubic_and_preserves_a_constant():
    maps = torch.rand(2, 40, 60, generator=torch.Generator().manual_seed(0))
    small = metrics.resize_maps(maps, (10, 15))
    assert small.shape == (2, 10, 15) and small.dtype == torch.float64
    assert torch.allclose(metrics.resize_maps(torch.full((1, 7, 9), 0.4), (30, 20)), torch.tensor(0.4, dtype=torch.float64))


def test_fixation_map_and_density():
    points = torch.tensor([[[0.2, 0.9], [3.99, 2.0], [1.0, 1.0]], [[2.5, 1.5], [0.0, 0.0], [0.0, 0.0]]])
    valid = torch.tensor([[True, True, True], [True, False, False]])
    fix = metrics.fixation_map(points, valid, (3, 4))
    expected = torch.zeros(2, 3, 4, dtype=torch.bool)
    expected[0, 0, 0] = expected[0, 2, 3] = expected[0, 1, 1] = True
    expected[1, 1, 2] = True  # padded rows must not mark pixel (0, 0)
    assert torch.equal(fix, expected)
    density = metrics.fixation_density(points, valid, (3, 4), sigma=1.5)
    assert density.shape == (2, 3, 4) and density.dtype == torch.float64
    for b in range(2):  # restated: a Gaussian per fixation summed at the pixel centres, peak 1
        ref = np.zeros((3, 4))
        for k in range(3):
            if valid[b, k]:
                x, y = points[b, k].tolist()
                for r in range(3):
                    for c in range(4):
                        ref[r, c] += math.exp(-((c + 0.5 - x) ** 2 + (r + 0.5 - y) ** 2) / (2 * 1.5**2))
        np.testing.assert_allclose(density[b].numpy(), ref / ref.max(), atol=1e-12)
    assert not metrics.fixation_density(points, torch.zeros_like(valid), (3, 4), 1.0).any()


def test_center_bias_is_centred_and_scaled_by_the_frame():
    centre = metrics.center_bias((40, 100), sigma_fraction=0.25)
    assert centre.shape == (40, 100)
    assert torch.allclose(centre, centre.flip(0)) and torch.allclose(centre, centre.flip(1))
    # σ = 0.25 x width = 25 px: pixel 74's centre (74.5) lies 24.5 px right of the frame's centre (50).
    row = centre[19]
    assert (row[74] / row[49]).item() == pytest.approx(math.exp(-(24.5**2 - 0.5**2) / (2 * 25**2)), rel=1e-9)
    assert (centre[:, 50] / centre[19, 50]).max().item() == pytest.approx(1.0)


def test_all_metrics_runs_batched_and_dtypes():
    sal, density, fix = random_case(6, batch=5, size=(32, 40))
    other = torch.from_numpy(np.random.default_rng(1).random(fix.shape) < 0.1)
    out = metrics.all_metrics(t(sal), t(density), t(fix), other, generator=torch.Generator().manual_seed(0), n_splits=10)
    assert list(out) == list(metrics.METRICS)
    for name, values in out.items():
        assert values.shape == (5,) and values.dtype == torch.float64 and torch.isfinite(values).all(), name


# --- shared draws, multiplicity, exact min-max -------------------------------------------------------------


def test_shuffled_auc_negatives_keep_their_multiplicity():
    # Pixel 0 (low value) was fixated 3 times in other images, pixel 4 (high value) once. With 4 fixations of
    # our own the whole pool is drawn: [0, 0, 0, 4] with multiplicity, [0, 4] as distinct pixels.
    sal = torch.tensor([[[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]]], dtype=torch.float64)
    fix = torch.tensor([[[False, True, True, False, False, True]]])
    fix[0, 0, 3] = True
    counts = torch.tensor([[[3, 0, 0, 0, 1, 0]]], dtype=torch.int32)
    samples = metrics.shuffled_auc_samples(fix, counts, n_splits=5, generator=torch.Generator().manual_seed(0))
    indices, mask = samples
    assert all(sorted(indices[0, s][mask[0, s]].tolist()) == [0, 0, 0, 4] for s in range(5))
    with_multiplicity = metrics.auc_shuffled(sal, fix, counts, samples=samples).item()
    distinct = metrics.auc_shuffled(sal, fix, counts > 0, n_splits=5, generator=torch.Generator().manual_seed(0)).item()
    sal_np, fix_np = sal[0].numpy(), fix[0].numpy()
    assert with_multiplicity == pytest.approx(ref_auc_shuffled(sal_np, fix_np, [[0, 0, 0, 4]]), abs=1e-12)
    assert distinct == pytest.approx(ref_auc_shuffled(sal_np, fix_np, [[0, 4]]), abs=1e-12)
    assert abs(with_multiplicity - distinct) > 0.05


def test_partial_draws_from_a_multiset_pool_follow_the_counts():
    fix = torch.zeros(1, 1, 6, dtype=torch.bool)
    fix[0, 0, 5] = True  # one fixation: one negative per split
    counts = torch.tensor([[[3, 0, 0, 0, 1, 0]]])
    indices, mask = metrics.shuffled_auc_samples(fix, counts, n_splits=4000, generator=torch.Generator().manual_seed(1))
    assert indices.shape == (1, 4000, 1) and bool(mask.all())
    assert (indices == 0).double().mean().item() == pytest.approx(0.75, abs=0.025)


def test_minmax_maps_the_extremes_exactly_so_threshold_zero_meets_a_fixation_at_the_minimum():
    values = torch.rand(1000, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 0.1
    normed = metrics._minmax(values)
    assert bool((normed.min(dim=1).values == 0).all()) and bool((normed.max(dim=1).values == 1).all())
    # Fixations on the minimum and the maximum; negatives on the minimum and on a value just above it. At
    # threshold 0 every value counts, so the curve steps from (0, 1/2) straight to (1, 1): area 0.75. Had
    # the minimum fallen below 0, that point would be (1/2, 1/2) and the area 0.625.
    sal = values[:1, None, :]
    low_index, high_index = int(sal.argmin()), int(sal.argmax())
    near_low = int((normed[0] - 0.05).abs().argmin())
    assert 0 < normed[0, near_low] < 0.1
    fix = torch.zeros_like(sal, dtype=torch.bool)
    fix[0, 0, low_index] = fix[0, 0, high_index] = True
    other = torch.zeros_like(fix)
    other[0, 0, low_index] = other[0, 0, near_low] = True
    assert metrics.auc_shuffled(sal, fix, other, n_splits=1).item() == pytest.approx(0.75, abs=1e-12)


def test_rows_scored_against_the_same_draws_differ_by_their_maps_alone():
    sal, density, fix = random_case(7, batch=4, size=(20, 24))
    other = torch.from_numpy(np.random.default_rng(2).random(fix.shape) < 0.2)
    generators = [torch.Generator().manual_seed(10 + b) for b in range(4)]
    draws = metrics.draw(t(fix), other, 20, generators)
    twin = t(sal).clone()
    scores = metrics.score_rows({"a": t(sal), "b": twin, "c": 1 - t(sal)}, t(density), t(fix), draws, chunk_pixels=500)
    for name in metrics.METRICS:
        assert torch.equal(scores["a"][name], scores["b"][name]), name
        assert not torch.equal(scores["a"][name], scores["c"][name]), name
    # An item's draws depend on its own generator only: item 2 alone gets the same draws and scores.
    alone = metrics.draw(t(fix)[2:3], other[2:3], 20, [torch.Generator().manual_seed(12)])
    assert torch.equal(alone.indices[0], draws.indices[2][:, : alone.indices.shape[2]])
    assert torch.equal(alone.noise[0], draws.noise[2])
    single = metrics.score_rows({"a": t(sal)[2:3]}, t(density)[2:3], t(fix)[2:3], alone)["a"]
    for name in metrics.METRICS:
        assert single[name].item() == scores["a"][name][2].item(), name


def test_blur_in_blocks_equals_whole_map_passes(monkeypatch):
    rng = np.random.default_rng(5)
    for shape in [(3, 17, 29), (1, 70, 45)]:
        maps = t(rng.random(shape))
        whole = metrics.blur_symmetric(maps, 2.0)
        monkeypatch.setattr(metrics, "BLUR_BLOCK_PIXELS", 64)  # several blocks per map, then one row each
        for block in (64, 1):
            monkeypatch.setattr(metrics, "BLUR_BLOCK_PIXELS", block)
            assert torch.equal(metrics.blur_symmetric(maps, 2.0), whole)
        monkeypatch.undo()


@pytest.mark.parametrize("shape", [(2, 9, 11), (1, 6, 30), (1, 3, 4)])  # the radius fits, just fits, does not
def test_symmetric_padding_repeats_the_edge_sample(shape):
    maps = t(np.random.default_rng(6).random(shape))
    radius = 6
    expected = np.pad(maps.numpy(), ((0, 0), (radius, radius), (radius, radius)), mode="symmetric")
    np.testing.assert_array_equal(metrics._symmetric_pad(maps, radius).numpy(), expected)

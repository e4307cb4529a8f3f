"""Histograms of |x| with power-of-two ranges, and per-tensor amax (clipping threshold) methods.

`AbsHistogram` counts |x| of every finite value it is given in a fixed number of equal bins over
[0, R], where R is always the smallest power of two >= the largest |x| seen so far (R = 0 until a
nonzero value arrives). When a larger value arrives, R doubles (as often as needed) and each pair of
adjacent bins is summed into one, which is exact on integer counts. Bin j covers (j*w, (j+1)*w] with
w = R / bins (bin 0 also holds 0), so a value exactly at R lands in the last bin, and the bin of a
value at range 2R is exactly its bin at range R halved (ceil(y/2) == ceil(ceil(y)/2)). Hence the final
counts, range, max and count depend only on the multiset of values fed in, never on the batch split,
batch order or the order of `merge` calls; and so does every amax computed from them.

amax methods (each returns a Python float; 0.0 for a histogram without nonzero data):
- `amax_minmax()`: the exact max |x|.
- `amax_percentile(p)`: the smallest bin upper edge e with share(|x| <= e) >= p/100.
- `amax_entropy(...)`: TensorRT-style KL-divergence calibration, a vectorised, result-identical port
  of NVIDIA pytorch-quantization's `_compute_amax_entropy` (see that method for the details and the
  differences to ONNX Runtime's `HistogramCollector.get_entropy_threshold`).
`compute_amax(hist, method, **options)` dispatches by name.

Only numpy is imported here (and the method names from trtbuild.config).
"""

import functools
import math
from decimal import ROUND_CEILING, Decimal, localcontext

import numpy as np

from trtbuild.config import METHODS

__all__ = ["AbsHistogram", "compute_amax", "METHODS"]

DICT_FORMAT = "trtbuild-abshist/1"
_CHUNK = 1 << 22  # elements binned per step: bounds the float64/int64 temporaries of a huge update
_MAX_EXPONENT = 1023  # 2**1024 is not a float64


def _ceil_pow2_exponent(value):
    """Smallest k with 2**k >= value (value > 0, finite)."""
    mant, exp = math.frexp(value)  # value = mant * 2**exp, 0.5 <= mant < 1
    return exp - 1 if mant == 0.5 else exp


def _coarsen(counts, times):
    """`counts` (int64, even length) after `times` range doublings: adjacent pairs summed, zero padded."""
    n = counts.size
    out = counts
    for _ in range(times):
        if not out[1:].any():  # everything already sits in bin 0, which stays bin 0
            break
        half = out.reshape(-1, 2).sum(axis=1)
        out = np.zeros(n, dtype=np.int64)
        out[:half.size] = half
    return out.copy() if out is counts else out


class AbsHistogram(object):
    """Histogram of |x| over [0, 2**k] in `bins` equal bins; exact, batch-split independent.

    Attributes: `counts` (int64 ndarray, length `num_bins`), `num_bins`, `range_exponent` (k, or
    None while no nonzero value has been seen), `range` (2**k or 0.0), `max_abs` (exact max |x| of
    the finite values), `count` (finite values counted, zeros included) and `nonfinite` (NaN/inf
    values seen and skipped).
    """

    def __init__(self, bins=2048):
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)):
            raise TypeError("bins must be an int, got {!r}".format(bins))
        bins = int(bins)
        if bins < 2 or bins % 2:
            raise ValueError("bins must be an even number >= 2 (pairs of bins merge when the range doubles), "
                             "got {}".format(bins))
        self.num_bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.range_exponent = None
        self.max_abs = 0.0
        self.count = 0
        self.nonfinite = 0

    # -- state -------------------------------------------------------------------------------

    @property
    def range(self):
        """Upper end R of the histogram: a power of two >= max_abs, or 0.0 before any nonzero value."""
        return 0.0 if self.range_exponent is None else math.ldexp(1.0, self.range_exponent)

    @property
    def bin_width(self):
        return self.range / self.num_bins

    def edge(self, i):
        """Upper edge of bin i-1 (== lower edge of bin i): i * R / bins, as a float."""
        if self.range_exponent is None:
            return 0.0
        return math.ldexp(float(i) / self.num_bins, self.range_exponent)

    def bin_edges(self):
        """All num_bins + 1 edges, 0 ... R (float64)."""
        if self.range_exponent is None:
            return np.zeros(self.num_bins + 1)
        return np.ldexp(np.arange(self.num_bins + 1, dtype=np.float64) / self.num_bins, self.range_exponent)

    def copy(self):
        other = AbsHistogram(self.num_bins)
        other.counts = self.counts.copy()
        other.range_exponent = self.range_exponent
        other.max_abs = self.max_abs
        other.count = self.count
        other.nonfinite = self.nonfinite
        return other

    def __eq__(self, other):
        if not isinstance(other, AbsHistogram):
            return NotImplemented
        return (self.num_bins == other.num_bins and self.range_exponent == other.range_exponent
                and self.max_abs == other.max_abs and self.count == other.count
                and self.nonfinite == other.nonfinite and np.array_equal(self.counts, other.counts))

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None

    def __repr__(self):
        return "AbsHistogram(bins={}, range={!r}, max_abs={!r}, count={}, nonfinite={})".format(
            self.num_bins, self.range, self.max_abs, self.count, self.nonfinite)

    # -- collection --------------------------------------------------------------------------

    def _grow_to(self, exponent):
        if self.range_exponent is None:
            # only zeros so far: they sit in bin 0, which is bin 0 at any range
            self.range_exponent = exponent
        elif exponent > self.range_exponent:
            self.counts = _coarsen(self.counts, exponent - self.range_exponent)
            self.range_exponent = exponent

    def update(self, array):
        """Add |x| of every finite value of `array` (any real ndarray or array-like; NaN/inf are
        counted in `nonfinite` and skipped). Returns self."""
        x = np.asarray(array)
        kind = x.dtype.kind
        if kind not in "fiub":
            raise TypeError("AbsHistogram.update needs a real numeric array, got dtype {}".format(x.dtype))
        flat = x.reshape(-1)
        if kind != "f":
            flat = flat.astype(np.float64)  # ints: abs(int8(-128)) would overflow
        if flat.size == 0:
            return self
        with np.errstate(invalid="ignore", over="ignore"):
            top = np.max(np.abs(flat))
        if not np.isfinite(top):
            finite = np.isfinite(flat)
            kept = int(np.count_nonzero(finite))
            self.nonfinite += int(flat.size - kept)
            flat = flat[finite]
            if kept == 0:
                return self
            top = np.max(np.abs(flat))
        top = float(top)  # float16/32 -> float64 is exact
        if top == 0.0:
            self.counts[0] += flat.size
            self.count += int(flat.size)
            return self
        exponent = _ceil_pow2_exponent(top)
        if exponent > _MAX_EXPONENT:
            raise ValueError("|x| = {!r} is beyond the largest supported range 2**{}".format(top, _MAX_EXPONENT))
        if self.range_exponent is None or exponent > self.range_exponent:
            self._grow_to(exponent)
        k = self.range_exponent
        n = self.num_bins
        pow2_bins = (n & (n - 1)) == 0
        for start in range(0, flat.size, _CHUNK):
            a = flat[start:start + _CHUNK].astype(np.float64)  # a fresh copy, changed in place below
            np.abs(a, out=a)
            # y = |x| / w = |x| * 2**-k * n; the power-of-two scaling is exact, so y at range 2R is
            # exactly y at range R halved (the property the exact doubling relies on).
            if -1000 < k < 1000:
                if pow2_bins:
                    a *= math.ldexp(float(n), -k)
                else:
                    a *= math.ldexp(1.0, -k)
                    a *= float(n)
            else:
                a = np.ldexp(a, -k)
                a *= float(n)
            np.ceil(a, out=a)  # bin j holds (j, j+1] in units of w: ceil(y) - 1
            idx = a.astype(np.int64)
            del a
            idx -= 1
            np.clip(idx, 0, n - 1, out=idx)  # 0 -> bin 0; the clip at n-1 only guards rounding
            self.counts += np.bincount(idx, minlength=n)
        self.count += int(flat.size)
        if top > self.max_abs:
            self.max_abs = top
        return self

    def merge(self, other):
        """Add another histogram's data to this one, exactly (both brought to the larger range).
        `other` is not changed. Returns self."""
        if not isinstance(other, AbsHistogram):
            raise TypeError("can only merge an AbsHistogram, got {!r}".format(type(other).__name__))
        if other.num_bins != self.num_bins:
            raise ValueError("cannot merge histograms with {} and {} bins".format(self.num_bins, other.num_bins))
        if other.range_exponent is None:
            theirs = other.counts  # zeros only, in bin 0
        else:
            self._grow_to(other.range_exponent)
            theirs = _coarsen(other.counts, self.range_exponent - other.range_exponent)
        self.counts = self.counts + theirs
        self.max_abs = max(self.max_abs, other.max_abs)
        self.count += other.count
        self.nonfinite += other.nonfinite
        return self

    # -- serialisation -----------------------------------------------------------------------

    def to_dict(self):
        """A JSON-serialisable dict (plain ints and floats) that `from_dict` restores exactly."""
        return {
            "format": DICT_FORMAT,
            "bins": self.num_bins,
            "range_exponent": self.range_exponent,
            "max_abs": float(self.max_abs),
            "count": int(self.count),
            "nonfinite": int(self.nonfinite),
            "counts": [int(c) for c in self.counts.tolist()],
        }

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict) or data.get("format") != DICT_FORMAT:
            raise ValueError("not a {} dict".format(DICT_FORMAT))
        hist = cls(int(data["bins"]))
        counts = data["counts"]
        if len(counts) != hist.num_bins or any(isinstance(c, bool) or not isinstance(c, int) or c < 0
                                               for c in counts):
            raise ValueError("counts must be {} non-negative ints".format(hist.num_bins))
        hist.counts = np.array(counts, dtype=np.int64).reshape(hist.num_bins)
        k = data["range_exponent"]
        hist.range_exponent = None if k is None else int(k)
        hist.max_abs = float(data["max_abs"])
        hist.count = int(data["count"])
        hist.nonfinite = int(data["nonfinite"])
        if int(hist.counts.sum()) != hist.count:
            raise ValueError("counts sum to {}, count says {}".format(int(hist.counts.sum()), hist.count))
        if hist.range_exponent is None:
            if hist.max_abs != 0.0 or hist.counts[1:].any():
                raise ValueError("a histogram without a range can only hold zeros")
        elif not (0.0 < hist.max_abs <= hist.range) or hist.range_exponent > _MAX_EXPONENT:
            raise ValueError("max_abs {!r} does not fit the range 2**{}".format(hist.max_abs, hist.range_exponent))
        return hist

    # -- amax ------------------------------------------------------------------------------

    def amax_minmax(self):
        """The exact max |x| seen."""
        return float(self.max_abs)

    def amax_percentile(self, p=99.99):
        """The smallest bin upper edge e such that the share of |x| <= e is >= p/100.

        Bins are (lo, hi], so this is a true bound: at least p% of the values are <= the result. The
        share is compared exactly (p taken as the decimal it prints as). NVIDIA pytorch-quantization's
        and ONNX Runtime's percentile return the *lower* edge of that bin (edges[searchsorted(cdf, p)]),
        one bin lower; ORT also clamps to the max. p=100 gives the upper edge of the last nonzero bin.
        """
        p = float(p)
        if not (0.0 <= p <= 100.0):
            raise ValueError("percentile must be in [0, 100], got {!r}".format(p))
        if self.max_abs == 0.0:
            return 0.0
        total = int(self.counts.sum())
        with localcontext() as ctx:
            ctx.prec = 80  # exact: p has <= 17 significant digits, total < 2**63
            need = Decimal(repr(p)) * total / 100
            need_int = int(need.to_integral_value(rounding=ROUND_CEILING))
        cum = np.cumsum(self.counts)
        idx = int(np.searchsorted(cum, need_int, side="left"))
        idx = min(idx, self.num_bins - 1)
        return self.edge(idx + 1)

    def amax_entropy(self, num_quant_bins=128, start_bin=128, stride=1):
        """amax minimising KL(P || Q), TensorRT-style; result-identical to NVIDIA pytorch-quantization.

        Port of `_compute_amax_entropy` (NVIDIA/TensorRT, tools/pytorch-quantization/
        pytorch_quantization/calib/histogram.py), with `num_quant_bins` = 1 << (num_bits - 1 +
        unsigned) = 128 for signed int8:
        - bins = counts with bins[0] replaced by bins[1] (damps the spike of exact zeros, e.g. after
          ReLU/padding); total = sum(bins). Our counts are left untouched (the reference's
          `calib_hist[:]` is a numpy view, so it overwrites the caller's histogram).
        - for each candidate i in range(start_bin, nbins + 1, stride):
          P = bins[:i] with sum(bins[i:]) added to P[i-1];
          the first i bins are mapped to num_quant_bins groups by
          `np.digitize(range(i), np.linspace(0, i, num_quant_bins + 1)) - 1`; each group's sum is
          spread evenly over the group's NONZERO bins (zero bins of bins[:i] stay 0 in Q);
          KL = scipy.stats.entropy(P, Q): both normalised, sum of rel_entr(p, q). There is no
          smoothing: p > 0 where q == 0 (outliers piled onto an empty bin i-1) gives +inf, which
          simply rules that candidate out. (The reference's `_normalize_distr` is a no-op;
          `entropy` normalises.)
        - the LAST i with the minimum KL wins (ties go to the larger threshold), and
          amax = calib_bin_edges[i] = i * bin_width: the upper edge of the last kept bin, not a bin
          centre.
        Deviations, only where the reference breaks: candidates also start at the last nonzero bin
        + 1 when that is below start_bin (the reference raises on an empty candidate list when
        start_bin > nbins, and otherwise only offers thresholds above all data); a candidate whose Q
        is empty (KL = NaN in the reference, where np.argmin would *select* the NaN) counts as +inf;
        a histogram whose bins are all zero after the bins[0] = bins[1] step (nonzero data only in
        bin 0) returns the upper edge of its last nonzero bin.
        Kept as in the reference, and worth knowing: when the bulk fills fewer than start_bin bins
        (outliers more than ~nbins/start_bin = 16x the bulk), every candidate inside the empty gap
        has KL = inf, so the threshold lands on an outlier's bin; more bins or a lower start_bin
        restore the clipping (see the tests).

        ONNX Runtime (onnxruntime/python/tools/quantization/calibrate.py,
        HistogramCollector.get_entropy_threshold) differs: its histogram is of signed x over
        [-max, max] and candidates grow symmetrically from the centre bin, with outliers added on both
        ends; there is no bins[0] = bins[1] step; groups are num_merged_bins = i // 128 consecutive bins
        with the remainder added to the last group, and Q is held in int64 (group mean truncated);
        p and q are smoothed (`smooth_distribution`, eps = 1e-4 moved onto zero bins) before
        scipy's entropy; np.argmin takes the FIRST minimum (the smaller threshold); the threshold is
        the upper edge hist_edges[end_index], clamped to the observed min/max.

        Implementation: all candidates at once. With prefix sums C (counts), Z (nonzero bins) and
        L (b log b), and per-candidate group bounds (cached per (nbins, num_quant_bins)),
        KL_i = (L_i - sum_g S_g log(S_g / n_g)) / T + (C_i / T) log(C_i / T) + (last-bin outlier term),
        a (candidates x num_quant_bins) array computation; the few candidates within 1e-9 of the
        minimum are then recomputed exactly as the reference does (same numpy operations), so
        ties break exactly as there. Measured on the 2-core dev machine: ~3 ms per 2048-bin tensor
        (1921 candidates), i.e. ~1.5 s for 500 tensors (the loop port in the tests: ~1.2 s per
        tensor); the group bounds are built once per (nbins, num_quant_bins), ~25 ms for 2048 bins.
        """
        num_quant_bins = int(num_quant_bins)
        start_bin = int(start_bin)
        stride = int(stride)
        if num_quant_bins < 1 or start_bin < 1 or stride < 1:
            raise ValueError("num_quant_bins, start_bin and stride must be >= 1")
        if self.max_abs == 0.0 or self.range_exponent is None:
            return 0.0
        n = self.num_bins
        bins = self.counts.copy()
        bins[0] = bins[1]
        nonzero = np.flatnonzero(bins)
        if nonzero.size == 0:
            return self.edge(int(np.flatnonzero(self.counts)[-1]) + 1)
        total = int(bins.sum())
        lo = max(1, min(start_bin, int(nonzero[-1]) + 1))
        cand = np.arange(lo, n + 1, stride)
        bounds, last_group = _group_bounds(n, num_quant_bins)
        approx = _kl_all_candidates(bins, total, cand, bounds[cand], last_group[cand])
        finite = np.isfinite(approx)
        if not finite.any():
            best = int(cand[-1])  # the reference's argmin over all-inf picks the last candidate
        else:
            kmin = float(approx[finite].min())
            near = cand[approx <= kmin + 1e-9 + 1e-9 * abs(kmin)]
            exact = np.array([_kl_reference(bins, total, int(i), bounds[int(i)]) for i in near])
            exact[np.isnan(exact)] = np.inf
            best = int(near[len(exact) - 1 - int(np.argmin(exact[::-1]))])
        return self.edge(best)

    def amax(self, method="entropy", **options):
        return compute_amax(self, method, **options)


# ---------------------------------------------------------------------------------------------
# entropy search internals

@functools.lru_cache(maxsize=4)
def _group_bounds(nbins, num_quant_bins):
    """For every candidate i in 1..nbins (row i): where each of the num_quant_bins groups starts when
    the reference maps bins 0..i-1 to groups (plus i at the end), and the group of bin i-1.

    The reference's group of bin j is `np.digitize(j, space) - 1` with
    `space = np.linspace(0, i, num_quant_bins + 1)`, i.e. #(space <= j) - 1 (digitize is
    searchsorted(space, j, 'right')). So group g starts at the first integer j >= space[g]:
    min(i, ceil(space[g])). The same linspace values, computed for all i at once (array `stop`)."""
    i = np.arange(1, nbins + 1)
    space = np.linspace(0, i, num=num_quant_bins + 1, axis=1)  # (nbins, num_quant_bins + 1)
    bounds = np.zeros((nbins + 1, num_quant_bins + 1), dtype=np.int64)
    bounds[1:] = np.minimum(np.ceil(space), i[:, None])
    last = np.zeros(nbins + 1, dtype=np.int64)
    last[1:] = np.count_nonzero(space <= (i - 1)[:, None], axis=1) - 1
    bounds.setflags(write=False)
    last.setflags(write=False)
    return bounds, last


def _kl_all_candidates(bins, total, cand, bounds, last_group):
    """KL(P_i || Q_i) for all candidates i at once (float64; +inf where the reference gives inf/NaN)."""
    b = bins.astype(np.float64)
    T = float(total)
    nz = b > 0
    C = np.concatenate(([0.0], np.cumsum(b)))  # integers < 2**53: exact
    Z = np.concatenate(([0], np.cumsum(nz)))
    blogb = np.zeros_like(b)
    blogb[nz] = b[nz] * np.log(b[nz])
    L = np.concatenate(([0.0], np.cumsum(blogb)))

    S = np.diff(C[bounds], axis=1)  # (m, q) group sums
    N = np.diff(Z[bounds], axis=1)  # nonzero bins per group
    rows = np.arange(cand.size)
    S_last = S[rows, last_group]
    N_last = N[rows, last_group]
    with np.errstate(divide="ignore", invalid="ignore"):
        A = np.where(S > 0, S * np.log(S / N), 0.0).sum(axis=1)
        Ci = C[cand]
        logT = math.log(T)
        logC = np.log(Ci)
        kl = (L[cand] - A) / T + (Ci / T) * (logC - logT)
        # bin i-1 also receives the outliers O: swap its term b log(b/T / q) for (b+O) log((b+O)/T / q)
        O = T - Ci
        bl = b[cand - 1]
        D = logC - logT - np.log(S_last / N_last)
        P = bl + O
        corr = (P * np.log(P) - np.where(bl > 0, bl * np.log(bl), 0.0) + O * D) / T
        kl = kl + np.where(O > 0, corr, 0.0)
    kl[(O > 0) & (bl == 0)] = np.inf  # p > 0 where q == 0
    kl[Ci == 0] = np.inf  # empty Q (NaN in the reference)
    kl[~np.isfinite(kl)] = np.inf
    return kl


def _kl_reference(bins, total, i, bounds_row):
    """One candidate, computed with the reference's arithmetic (bit-identical KL)."""
    nq = bounds_row.size - 1
    digitized = np.repeat(np.arange(nq), np.diff(bounds_row))
    head = bins[:i]
    keep = head != 0
    dig = digitized[keep]
    group_counts = np.bincount(dig, weights=head[keep].astype(np.float64), minlength=nq)
    group_sizes = np.bincount(dig, minlength=nq)
    new_density = np.zeros(i, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        new_density[keep] = (group_counts / group_sizes)[dig]
    reference_density = np.array(head)
    reference_density[-1] += total - int(head.sum())
    return _entropy(reference_density, new_density)


def _entropy(pk, qk):
    """scipy.stats.entropy(pk, qk) with numpy only: normalise both, sum rel_entr(p, q)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pk = 1.0 * pk / np.sum(pk, axis=0, keepdims=True)
        qk = 1.0 * qk / np.sum(qk, axis=0, keepdims=True)
        vec = np.where((pk > 0) & (qk > 0), pk * np.log(pk / qk),
                       np.where((pk == 0) & (qk >= 0), 0.0, np.inf))
        vec = np.where(np.isnan(pk) | np.isnan(qk), np.nan, vec)
    return float(np.sum(vec, axis=0))


# ---------------------------------------------------------------------------------------------

def compute_amax(hist, method, **options):
    """amax of `hist` by `method`: "entropy" (options num_quant_bins, start_bin, stride), "minmax"
    (no options) or "percentile" (option p, also accepted as percentile=). Returns a float."""
    if method == "entropy":
        return hist.amax_entropy(**options)
    if method == "minmax":
        if options:
            raise TypeError("minmax takes no options, got {}".format(", ".join(sorted(options))))
        return hist.amax_minmax()
    if method == "percentile":
        if "percentile" in options:
            if "p" in options:
                raise TypeError("give the percentile as p= or percentile=, not both")
            options = dict(options)
            options["p"] = options.pop("percentile")
        return hist.amax_percentile(**options)
    raise ValueError("unknown amax method {!r}; allowed: {}".format(method, ", ".join(METHODS)))

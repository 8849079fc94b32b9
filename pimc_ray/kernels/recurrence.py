"""Recurrence plots of index time series: the images PIMC's encoder sees, built per batch and never stored.

A recurrence plot (RP, Eckmann et al. 1987) of a series ``x_1..x_T`` is the ``T x T`` matrix of distances
``R[i, j] = |x_i - x_j|``. With ``dimension = m > 1`` the series is first embedded as trajectories
``(x_i, x_{i+tau}, ..., x_{i+(m-1)tau})`` and ``R`` holds their Euclidean distances, for
``T' = T - (m-1) tau`` trajectories. By default the plot is not thresholded, as in pyts's ``RecurrencePlot()``
that the PIMC authors use; the thresholds of pyts (a distance, ``'point'``, ``'distance'``) are reproduced
exactly. See ``docs/recurrence-plots.md`` for the choices the paper leaves open.

Three layers, all array-generic (NumPy or CuPy, decided by the inputs):

* :func:`recurrence_plot` - any ``(..., T)`` series, every pyts option, bit-identical to pyts in float64.
* :func:`rp_batch` - encoder input: ``(N, C, T)`` index series to ``(N, C, S, S)`` plots, with optional
  resampling to ``S`` steps and per-plot max scaling.
* :func:`rp_from_reflectance` - what the pipeline calls: blue, red, NIR ``(N, T)`` to NDVI/EVI/SAVI plots
  ``(N, 3, S, S)``. On CuPy arrays both batch builders run one fused CUDA kernel
  (:mod:`pimc_ray.kernels.gpu`).

NaN policy: a NaN at step ``t`` (nodata) makes row and column ``t`` of the plot NaN (every trajectory that
contains it, when ``dimension > 1``); the other entries are unaffected. Thresholded plots keep those NaN, and
a ``'point'``/``'distance'`` threshold is undefined for a plot that contains NaN, so that whole plot is NaN.

CPU speed: NumPy's broadcast ``x[:, :, None] - x[:, None, :]`` runs its inner loop over only ``T`` elements
and reaches about 5 GB/s on one core. Here the differences come from one batched matrix product per chunk,
``[x_i, 1] . [1, -x_j] = x_i - x_j``: both products are exact (multiplications by 1) and the sum is rounded
once, so every entry equals the subtraction bit for bit, while BLAS writes the ``T x T`` blocks 1.6-2x as
fast. Chunks of about :data:`CPU_CHUNK_BYTES` stay in cache between the product and the ``abs``, so the output
goes to memory once (``docs/benchmarks.md`` has the figures). On CuPy the same code runs through cuBLAS, which
is exact too unless TF32 is switched on (``CUPY_TF32=1`` would round the series to 10-bit mantissas).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from pimc_ray.kernels.indices import SAVI_L, vegetation_indices
from pimc_ray.kernels.xp import array_namespace, is_cupy_array

__all__ = [
    "CPU_CHUNK_BYTES",
    "Normalize",
    "Threshold",
    "embedded_length",
    "recurrence_plot",
    "resample_series",
    "rp_batch",
    "rp_from_reflectance",
]

Array = Any
"""A NumPy or CuPy array (the two share no static type)."""

Threshold = float | Literal["point", "distance"] | None
"""``None`` (distances), a distance, or pyts's percentile rules ``'point'`` and ``'distance'``."""

Normalize = Literal["none", "max"]
"""Per-plot scaling of :func:`rp_batch`: none, or divide each sample's channel by its maximum distance."""

CPU_CHUNK_BYTES = 2 * 1024 * 1024
"""Plot bytes per step on NumPy: small enough to stay in cache between the product and ``abs`` (0.5-4 MiB
measured within 10% of each other on a 2-core EPYC with 1 MiB L2 per core and 32 MiB L3; 2 MiB was best)."""

_PYTS_DEFAULT_PERCENTAGE = 10.0


def embedded_length(n_timestamps: int, dimension: int = 1, time_delay: int = 1) -> int:
    """Number of trajectories ``T' = T - (dimension - 1) * time_delay`` (the side of the plot).

    Args:
        n_timestamps: Series length ``T``.
        dimension: Embedding dimension ``m`` (1 = the values themselves).
        time_delay: Delay ``tau`` between coordinates of a trajectory.

    Returns:
        ``T'``.

    Raises:
        ValueError: A parameter is not a positive integer, or ``T' < 1``.
    """
    for name, value in (("dimension", dimension), ("time_delay", time_delay)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    n_traj = int(n_timestamps) - (int(dimension) - 1) * int(time_delay)
    if n_traj < 1:
        raise ValueError(
            f"A series of {n_timestamps} steps has no trajectory of dimension={dimension} and "
            f"time_delay={time_delay}: lower them so that (dimension - 1) * time_delay < {n_timestamps}."
        )
    return n_traj


def _result_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """Float32/float64 stay; float16 computes in float32; integers and bools in float64 (as in pyts)."""
    if dtype.kind == "f":
        return np.dtype(np.float32) if dtype.itemsize < 4 else dtype
    return np.dtype(np.float64)


def _output(xp: Any, out: Array | None, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array:
    """Check a caller's ``out`` buffer, or allocate one."""
    if out is None:
        return xp.empty(shape, dtype=dtype)
    if tuple(out.shape) != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous {dtype} array of shape {shape}, got {out.dtype} {tuple(out.shape)}"
            f"{'' if out.flags.c_contiguous else ' (not C-contiguous)'}: allocate it with "
            f"xp.empty({shape}, dtype='{dtype}')."
        )
    return out


def _rows_per_chunk(xp: Any, n_rows: int, plot_bytes: int) -> int:
    """Plots per step: a cache-sized chunk on the CPU, everything at once on a GPU."""
    if xp is not np:
        return max(n_rows, 1)
    return max(1, CPU_CHUNK_BYTES // max(plot_bytes, 1))


def _check_threshold(threshold: Threshold, percentage: float | None) -> float:
    """Validate pyts's threshold options; return the percentage to use (pyts's default 10)."""
    if threshold is None or isinstance(threshold, str):
        if threshold not in (None, "point", "distance"):
            raise ValueError(
                f"threshold must be None, 'point', 'distance' or a positive float, got {threshold!r}."
            )
    elif isinstance(threshold, bool) or not isinstance(threshold, int | float | np.integer | np.floating):
        raise TypeError(
            f"threshold must be None, 'point', 'distance' or a positive float, got {threshold!r}."
        )
    elif not threshold > 0:
        raise ValueError(f"A numeric threshold must be > 0 (pyts's rule), got {threshold!r}.")
    if threshold in ("point", "distance"):
        pct = _PYTS_DEFAULT_PERCENTAGE if percentage is None else float(percentage)
        if not 0.0 <= pct <= 100.0:
            raise ValueError(f"percentage must be between 0 and 100, got {percentage!r}.")
        return pct
    if percentage is not None:
        raise ValueError(
            f"percentage={percentage!r} only applies to threshold='point' or 'distance' (got threshold="
            f"{threshold!r}): drop it or choose one of those thresholds."
        )
    return _PYTS_DEFAULT_PERCENTAGE


def _binarize(xp: Any, dist: Array, threshold: Threshold, percentage: float) -> None:
    """Replace distances ``(m, T', T')`` by ``1.0`` where ``dist < threshold`` else ``0.0``, in place.

    pyts compares strictly (``X_dist < threshold``); so do we. NaN distances stay NaN, and plots whose
    percentile threshold is undefined (they contain NaN) become all NaN.
    """
    invalid = xp.isnan(dist)  # (m, T', T') bool
    if threshold == "point":
        m = dist.shape[0]
        thr = xp.percentile(dist.reshape(m, -1), percentage, axis=1)[:, None, None]  # (m, 1, 1)
    elif threshold == "distance":
        thr = percentage / 100 * xp.max(dist, axis=(1, 2))[:, None, None]  # pyts's operation order
    else:
        thr = threshold
    if threshold in ("point", "distance"):
        # A plot with any NaN has no percentile (CuPy would even return one): all of it is undefined.
        invalid |= invalid.any(axis=(1, 2), keepdims=True)
    dist[...] = dist < thr
    xp.copyto(dist, dist.dtype.type(np.nan), where=invalid)


def recurrence_plot(
    x: Array,
    *,
    threshold: Threshold = None,
    percentage: float | None = None,
    dimension: int = 1,
    time_delay: int = 1,
    out: Array | None = None,
) -> Array:
    """Recurrence plots of series along the last axis, as pyts's ``RecurrencePlot`` computes them.

    ``R[..., i, j] = ||traj_i - traj_j||``: ``|x_i - x_j|`` for ``dimension = 1``, the Euclidean distance of
    the delay-embedded trajectories otherwise (accumulated over coordinates in pyts's order, then
    square-rooted).
    In float64 the result equals pyts's bit for bit; in float32 it is within 1e-6 of it for values in [-1, 1].

    Args:
        x: Series, shape ``(..., T)`` (e.g. ``(pixel, index, time)``); float32 stays float32, float64 stays
            float64, integers are computed in float64. NaN is nodata (see the module docstring).
        threshold: ``None`` for distances (pyts's default); a float ``eps > 0`` for the binary plot
            ``dist < eps`` (strict, as pyts); ``'point'`` to threshold each plot at its ``percentage``-th
            percentile of distances (linear interpolation, :func:`numpy.percentile`'s default); ``'distance'``
            to threshold at ``percentage`` % of each plot's maximum distance.
        percentage: For ``'point'`` and ``'distance'`` only; 10 when ``None`` (pyts's default).
        dimension: Embedding dimension ``m`` (positive integer; pyts's fractional form is not supported).
        time_delay: Delay ``tau`` between trajectory coordinates (positive integer).
        out: Optional C-contiguous buffer of shape ``(..., T', T')`` and the result dtype, filled in place.

    Returns:
        Plots of shape ``(..., T', T')`` with ``T' = T - (dimension - 1) * time_delay``: distances, or 0.0/1.0
        when thresholded; NaN where a contributing value is NaN. ``out`` itself when it is given.

    Raises:
        ValueError: Bad ``dimension``/``time_delay``/``threshold``/``percentage``, empty series, or ``out`` of
            the wrong shape, dtype or layout.
        TypeError: ``threshold`` of an unsupported type.
    """
    xp = array_namespace(x, out)
    x = xp.asarray(x)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(
            f"x must have at least one time step along its last axis, got shape {tuple(x.shape)}."
        )
    pct = _check_threshold(threshold, percentage)
    dtype = _result_dtype(x.dtype)
    x = x.astype(dtype, copy=False)
    *lead, n_steps = x.shape
    n_traj = embedded_length(n_steps, dimension, time_delay)
    out = _output(xp, out, (*lead, n_traj, n_traj), dtype)

    n_rows = math.prod(lead)
    series = x.reshape(n_rows, n_steps)  # (row, time)
    plots = out.reshape(n_rows, n_traj, n_traj)  # (row, i, j): a view of `out`
    step = _rows_per_chunk(xp, n_rows, n_traj * n_traj * dtype.itemsize)
    # Per chunk, rows [x; 1; -x] hold both operands of x_i - x_j = [x_i, 1] . [1, -x_j] (module docstring):
    # lhs = rows 0-1 transposed, (m, time, 2); rhs = rows 1-2, (m, 2, time). Reused, so it stays in cache.
    operands = xp.empty((min(step, n_rows), 3, n_steps), dtype=dtype)  # (m, 3, time)
    operands[:, 1, :] = 1
    square = xp.empty((min(step, n_rows), n_traj, n_traj), dtype=dtype) if dimension > 1 else None
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        ops = operands[: stop - start]
        ops[:, 0, :] = series[start:stop]
        xp.negative(series[start:stop], out=ops[:, 2, :])
        lhs = ops[:, 0:2, :].transpose(0, 2, 1)  # (m, time, 2)
        rhs = ops[:, 1:3, :]  # (m, 2, time)
        plot = plots[start:stop]  # (m, T', T')
        if square is None:
            xp.matmul(lhs, rhs, out=plot)  # x_i - x_j, rounded once
            xp.abs(plot, out=plot)
        else:
            tmp = square[: stop - start]
            for d in range(dimension):
                steps = slice(d * time_delay, d * time_delay + n_traj)  # coordinate d of each trajectory
                target = plot if d == 0 else tmp
                xp.matmul(lhs[:, steps, :], rhs[:, :, steps], out=target)
                xp.multiply(target, target, out=target)
                if d > 0:
                    xp.add(plot, tmp, out=plot)  # pyts: total += diff * diff, coordinate by coordinate
            xp.sqrt(plot, out=plot)
        if threshold is not None:
            _binarize(xp, plot, threshold, pct)
    return out


def _linear_taps(
    n_in: int, n_out: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Linear-interpolation taps from ``n_in`` to ``n_out`` evenly spaced points, both ends kept.

    Output point ``s`` sits at ``p = s (n_in - 1) / (n_out - 1)`` and takes ``x[i0] + (x[i1] - x[i0]) w`` with
    ``i0 = floor(p)``, ``w = p - i0``. Where ``w == 0``, ``i1 = i0`` so that a NaN neighbour with zero weight
    does not leak in. The fused GPU kernel applies these same taps.

    Returns:
        ``(i0, i1, w)``: int32, int32 and float64 arrays of shape ``(n_out,)``.
    """
    if n_out == 1 or n_in == 1:
        pos = np.zeros(n_out)
    else:
        pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)  # exact at both ends
    i0 = np.minimum(np.floor(pos).astype(np.int32), n_in - 1)
    weight = pos - i0
    i1 = np.where(weight > 0, np.minimum(i0 + 1, n_in - 1), i0).astype(np.int32)
    return i0, i1, weight


def resample_series(x: Array, size: int) -> Array:
    """Resample series along the last axis to ``size`` evenly spaced steps by linear interpolation.

    The first and last steps are kept; step ``s`` lies at ``s (T - 1) / (size - 1)`` of the input's steps.
    A NaN input step makes the output steps that interpolate from it NaN.

    Args:
        x: Series ``(..., T)``, float.
        size: Number of output steps (>= 1).

    Returns:
        ``(..., size)`` in ``x``'s dtype (``x`` itself when ``size == T``).

    Raises:
        ValueError: ``size`` is not a positive integer.
    """
    xp = array_namespace(x)
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}.")
    n_in = x.shape[-1]
    if size == n_in:
        return x
    i0, i1, weight = (xp.asarray(a) for a in _linear_taps(n_in, int(size)))
    x0 = x[..., i0]  # (..., size)
    return x0 + (x[..., i1] - x0) * weight.astype(x.dtype)


def _scale_to_unit_range(x: Array) -> Array:
    """``(x - min) / (max - min)`` per series along the last axis, ignoring NaN.

    The plot of the result is the plot of ``x`` divided by its maximum distance (``max - min`` for
    ``dimension = 1``), up to rounding, at O(T) instead of O(T^2) cost. Constant series (range 0) and all-NaN
    series are left unscaled (plots of zeros, or NaN).
    """
    xp = array_namespace(x)
    nan = xp.isnan(x)
    lo = xp.where(nan, xp.inf, x).min(axis=-1, keepdims=True)  # (..., 1)
    hi = xp.where(nan, -xp.inf, x).max(axis=-1, keepdims=True)
    span = hi - lo
    span = xp.where(span > 0, span, 1)
    return (x - lo) / span


def _check_batch_options(size: int | None, normalize: str, n_steps: int) -> int:
    """Validate :func:`rp_batch`'s options; return the plot side ``S``."""
    if normalize not in ("none", "max"):
        raise ValueError(f"normalize must be 'none' or 'max', got {normalize!r}.")
    if size is None:
        return n_steps
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"size must be None or a positive integer, got {size!r}.")
    return int(size)


def rp_batch(
    series: Array,
    *,
    size: int | None = None,
    normalize: Normalize = "none",
    out: Array | None = None,
) -> Array:
    """Encoder input: unthresholded recurrence plots of a batch of index series, one channel per index.

    Steps, in order: resample each series to ``size`` steps (:func:`resample_series`, linear, ends kept) -
    the plot of the resampled series rather than a resized plot, because it costs O(S^2) instead of
    O(T^2 + S^2) and keeps the plot a true distance matrix (zero diagonal, symmetric); then, with
    ``normalize='max'``, scale each sample's channel so its largest distance is 1 (done on the series, see
    ``docs/recurrence-plots.md``); then ``R[n, c, i, j] = |x[n, c, i] - x[n, c, j]|``.

    Args:
        series: ``(N, C, T)`` regular-grid series (``(pixel, index, time)``, C = 3 for NDVI, EVI, SAVI),
            float32 for the encoder; NaN is nodata.
        size: Plot side ``S``; ``None`` keeps ``T``.
        normalize: ``'none'`` (default: index distances are already bounded by 2 after clipping) or ``'max'``.
        out: Optional C-contiguous ``(N, C, S, S)`` buffer of the series' float dtype, reused across batches.

    Returns:
        ``(N, C, S, S)`` plots, float32 for float32 series (``out`` when given). NumPy or CuPy like the input;
        on CuPy one fused kernel does all steps.

    Raises:
        ValueError: ``series`` is not 3-D, or bad ``size``, ``normalize`` or ``out``.
    """
    xp = array_namespace(series, out)
    series = xp.asarray(series)
    if series.ndim != 3:
        raise ValueError(f"series must be (pixel, index, time), got shape {tuple(series.shape)}.")
    n_pixels, n_channels, n_steps = series.shape
    n_out = _check_batch_options(size, normalize, n_steps)
    dtype = _result_dtype(series.dtype)
    if is_cupy_array(series):
        from pimc_ray.kernels.gpu import launch_fused_rp  # noqa: PLC0415 - CUDA code loads only with CuPy arrays

        out = _output(xp, out, (n_pixels, n_channels, n_out, n_out), dtype)
        taps = _taps_or_none(n_steps, n_out)
        return launch_fused_rp(
            (series,), out, from_reflectance=False, taps=taps, normalize=normalize == "max"
        )
    x = resample_series(series.astype(dtype, copy=False), n_out)  # (N, C, S)
    if normalize == "max":
        x = _scale_to_unit_range(x)
    return recurrence_plot(x, out=out)


def _taps_or_none(
    n_in: int, n_out: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]] | None:
    """Resampling taps for the GPU kernel, or ``None`` when the length does not change."""
    return None if n_in == n_out else _linear_taps(n_in, n_out)


def rp_from_reflectance(
    blue: Array,
    red: Array,
    nir: Array,
    *,
    size: int | None = None,
    normalize: Normalize = "none",
    L: float = SAVI_L,  # noqa: N803 - SAVI's name for it
    clip: bool = True,
    out: Array | None = None,
) -> Array:
    """Recurrence plots of NDVI, EVI and SAVI straight from reflectance: what the pipeline calls per batch.

    Equivalent to ``rp_batch(vegetation_indices(blue, red, nir, axis=1), size=size, normalize=normalize)``,
    which is what runs on NumPy; on CuPy one fused kernel computes the indices, resamples, scales and writes
    the plots without intermediate arrays (``to_torch(result)`` then hands them to the encoder in place).

    Args:
        blue: Blue surface reflectance (B02), ``(N, T)`` on the regular time grid, float32; NaN is nodata.
        red: Red surface reflectance (B04), ``(N, T)``.
        nir: Near-infrared surface reflectance (B08), ``(N, T)``.
        size: Plot side ``S``; ``None`` keeps ``T``.
        normalize: ``'none'`` or ``'max'``, see :func:`rp_batch`.
        L: SAVI's soil-brightness correction.
        clip: Clip indices to [-1, 1] (see :mod:`pimc_ray.kernels.indices`).
        out: Optional C-contiguous ``(N, 3, S, S)`` buffer.

    Returns:
        ``(N, 3, S, S)`` plots, channels in :data:`pimc_ray.kernels.indices.INDEX_NAMES` order.

    Raises:
        ValueError: The bands are not three ``(N, T)`` arrays of one shape, or bad options.
    """
    xp = array_namespace(blue, red, nir, out)
    bands = [xp.asarray(b) for b in (blue, red, nir)]
    if bands[0].ndim != 2 or not bands[0].shape == bands[1].shape == bands[2].shape:
        raise ValueError(
            "blue, red and nir must be (pixel, time) arrays of one shape, got "
            f"{[tuple(b.shape) for b in bands]}."
        )
    n_pixels, n_steps = bands[0].shape
    n_out = _check_batch_options(size, normalize, n_steps)
    if is_cupy_array(bands[0]):
        from pimc_ray.kernels.gpu import launch_fused_rp  # noqa: PLC0415

        dtype = _result_dtype(np.result_type(*(b.dtype for b in bands)))
        out = _output(xp, out, (n_pixels, 3, n_out, n_out), dtype)
        taps = _taps_or_none(n_steps, n_out)
        return launch_fused_rp(
            tuple(bands), out, from_reflectance=True, taps=taps, normalize=normalize == "max", L=L, clip=clip
        )
    series = vegetation_indices(*bands, axis=1, L=L, clip=clip)  # (N, 3, T)
    return rp_batch(series, size=size, normalize=normalize, out=out)

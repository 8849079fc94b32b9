"""Fused CUDA kernel: reflectance (or index series) to recurrence plots in one pass on the GPU.

One warp handles one pixel at a time. It loads the pixel's blue, red and NIR series (``T`` steps each),
computes NDVI, EVI and SAVI into shared memory, optionally resamples them to ``S`` steps and scales them to
unit range, then writes the ``3 x S x S`` plot with coalesced stores. Nothing but the plots touches global
memory, so the kernel runs at the speed of writing its output. The index formulas, their NaN/clip policy and
the resampling repeat :mod:`pimc_ray.kernels.indices` and :mod:`pimc_ray.kernels.recurrence` operation for
operation, and the kernel is compiled with ``--fmad=false`` (no fused multiply-adds), so float32 results match
the NumPy path bit for bit; the GPU tests check that.

This module is imported only when CuPy arrays are passed (:func:`pimc_ray.kernels.recurrence.rp_batch` and
:func:`pimc_ray.kernels.recurrence.rp_from_reflectance` dispatch here); it reaches CuPy only through
:mod:`pimc_ray.kernels.xp`. Hand the result to PyTorch with :func:`pimc_ray.kernels.xp.to_torch` (DLPack, no host copy).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from pimc_ray.kernels.indices import DENOMINATOR_EPS, VALID_RANGE
from pimc_ray.kernels.xp import import_cupy

__all__ = ["launch_fused_rp"]

Array = Any
"""A CuPy array."""

_WARPS_PER_BLOCK = 8
_SHARED_BYTES_LIMIT = 48 * 1024  # default dynamic shared memory per block without an opt-in
_BLOCKS_PER_SM = 16

_SOURCE = r"""
#define REAL {real}
#define FABS {fabs}

// Index ratio with pimc_ray.kernels.indices' policy: NaN where |den| < eps, then optional clip to [lo, hi].
__device__ __forceinline__ REAL ratio(REAL num, REAL den, REAL eps, REAL nan_value, int clip, REAL lo,
                                      REAL hi) {{
    if (FABS(den) < eps) return nan_value;
    REAL v = num / den;
    if (clip) {{            // comparisons with NaN are false: NaN stays NaN, as with xp.maximum/xp.minimum
        v = (v < lo) ? lo : v;
        v = (v > hi) ? hi : v;
    }}
    return v;
}}

extern "C" __global__ void fused_rp(
    const REAL* __restrict__ in0,    // reflectance: blue (N, T); series: (N, C, T)
    const REAL* __restrict__ in1,    // reflectance: red (N, T); series: unused
    const REAL* __restrict__ in2,    // reflectance: nir (N, T); series: unused
    const int* __restrict__ tap0,    // (S,) resampling taps, see recurrence._linear_taps
    const int* __restrict__ tap1,    // (S,)
    const REAL* __restrict__ tapw,   // (S,)
    REAL* __restrict__ out,          // (N, C, S, S)
    const long long n_pixels, const int n_channels, const int n_in, const int n_out,
    const int from_reflectance, const int resample, const int normalize, const int clip,
    const REAL eps, const REAL savi_l, const REAL savi_gain, const REAL nan_value,
    const REAL lo, const REAL hi)   // clip range
{{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps_per_block = blockDim.x >> 5;
    const int per_warp = n_channels * (n_in + n_out + 2);
    REAL* ser = reinterpret_cast<REAL*>(smem_raw) + warp * per_warp;  // (C, T) index series
    REAL* res = ser + n_channels * n_in;                               // (C, S) resampled series
    REAL* shift = res + n_channels * n_out;                            // (C,) minimum per channel
    REAL* span = shift + n_channels;                                   // (C,) range per channel
    const long long n_warps = (long long)gridDim.x * warps_per_block;
    const long long plot_size = (long long)n_out * n_out;

    for (long long n = (long long)blockIdx.x * warps_per_block + warp; n < n_pixels; n += n_warps) {{
        // 1. The pixel's series into shared memory: indices from reflectance, or a copy of the series.
        if (from_reflectance) {{
            const long long row = n * n_in;
            for (int t = lane; t < n_in; t += 32) {{
                const REAL b = in0[row + t], r = in1[row + t], nr = in2[row + t];
                ser[t] = ratio(nr - r, nr + r, eps, nan_value, clip, lo, hi);                       // NDVI
                ser[n_in + t] = ratio((REAL)2.5 * (nr - r), nr + (REAL)6 * r - (REAL)7.5 * b + (REAL)1,
                                      eps, nan_value, clip, lo, hi);                              // EVI
                ser[2 * n_in + t] = ratio(savi_gain * (nr - r), nr + r + savi_l,
                                          eps, nan_value, clip, lo, hi);                          // SAVI
            }}
        }} else {{
            const long long base = n * n_channels * n_in;
            for (int k = lane; k < n_channels * n_in; k += 32) ser[k] = in0[base + k];
        }}
        __syncwarp();

        // 2. Linear resampling to S steps: x0 + (x1 - x0) * w, as recurrence.resample_series.
        REAL* x = ser;
        if (resample) {{
            for (int k = lane; k < n_channels * n_out; k += 32) {{
                const int c = k / n_out, s = k - c * n_out;
                const REAL x0 = ser[c * n_in + tap0[s]];
                res[k] = x0 + (ser[c * n_in + tap1[s]] - x0) * tapw[s];
            }}
            __syncwarp();
            x = res;
        }}

        // 3. Scale to unit range, ignoring NaN: (x - min) / (max - min), as recurrence._scale_to_unit_range.
        if (normalize) {{
            for (int c = lane; c < n_channels; c += 32) {{   // one lane per channel
                REAL mn = 0, mx = 0;
                bool any = false;
                for (int s = 0; s < n_out; ++s) {{
                    const REAL v = x[c * n_out + s];
                    if (v == v) {{
                        mn = (!any || v < mn) ? v : mn;
                        mx = (!any || v > mx) ? v : mx;
                        any = true;
                    }}
                }}
                const REAL d = mx - mn;
                shift[c] = mn;
                span[c] = (d > (REAL)0) ? d : (REAL)1;
            }}
            __syncwarp();
            for (int k = lane; k < n_channels * n_out; k += 32) {{
                const int c = k / n_out;
                x[k] = (x[k] - shift[c]) / span[c];
            }}
            __syncwarp();
        }}

        // 4. The plots |x_i - x_j|: the pixel's C x S x S block is contiguous, so the warp's stores coalesce.
        for (int c = 0; c < n_channels; ++c) {{
            const REAL* xc = x + c * n_out;
            REAL* oc = out + (n * n_channels + c) * plot_size;
            int i = lane / n_out, j = lane - (lane / n_out) * n_out;
            for (long long k = lane; k < plot_size; k += 32) {{
                oc[k] = FABS(xc[i] - xc[j]);
                j += 32;
                while (j >= n_out) {{ j -= n_out; ++i; }}
            }}
        }}
        __syncwarp();   // shared series are overwritten by the next pixel
    }}
}}
"""


@functools.cache
def _kernel(dtype_char: str) -> Any:
    """Compile (once per process and dtype; CuPy also caches on disk) the kernel for float32 or float64."""
    cupy = import_cupy()
    real, fabs = {"f": ("float", "fabsf"), "d": ("double", "fabs")}[dtype_char]
    source = _SOURCE.format(real=real, fabs=fabs)
    return cupy.RawKernel(source, "fused_rp", options=("--fmad=false",))


@functools.cache
def _multiprocessor_count(device_id: int) -> int:
    """Streaming multiprocessors of a device (queried once; the attribute query is slow)."""
    cupy = import_cupy()
    return int(
        cupy.cuda.runtime.deviceGetAttribute(cupy.cuda.runtime.cudaDevAttrMultiProcessorCount, device_id)
    )


def launch_fused_rp(
    inputs: tuple[Array, ...],
    out: Array,
    *,
    from_reflectance: bool,
    taps: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]] | None,
    normalize: bool,
    L: float = 0.5,  # noqa: N803 - SAVI's name for it
    clip: bool = True,
) -> Array:
    """Fill ``out`` with recurrence plots computed by the fused kernel.

    Callers (:mod:`pimc_ray.kernels.recurrence`) validate shapes and options and allocate ``out``; this function only
    lays out the arguments and launches, on the current CUDA device, which must hold the arrays (a Ray GPU
    actor sees exactly one).

    Args:
        inputs: ``(blue, red, nir)``, each ``(N, T)``, when ``from_reflectance``; else ``(series,)`` of shape
            ``(N, C, T)``. CuPy arrays of ``out``'s dtype (float32 or float64).
        out: C-contiguous CuPy array ``(N, C, S, S)``, C = 3 from reflectance.
        from_reflectance: Compute NDVI, EVI, SAVI from the three bands first.
        taps: ``(i0, i1, w)`` from ``recurrence._linear_taps(T, S)``, or ``None`` when ``S == T``.
        normalize: Scale each series to unit range before the plot (``normalize='max'``).
        L: SAVI's soil-brightness correction.
        clip: Clip the indices to their valid range.

    Returns:
        ``out``.

    Raises:
        ValueError: A pixel's series do not fit in shared memory (``C (T + S)`` above ~12,000 float32 values).
    """
    cupy = import_cupy()
    dtype = out.dtype
    n_pixels, n_channels, n_out = out.shape[0], out.shape[1], out.shape[-1]
    n_in = inputs[0].shape[-1]
    arrays = [cupy.ascontiguousarray(a, dtype=dtype) for a in inputs]
    while len(arrays) < 3:
        arrays.append(arrays[0])  # unused pointer slots of the series mode
    if taps is None:
        tap0 = tap1 = cupy.zeros(1, dtype=np.int32)
        tapw = cupy.zeros(1, dtype=dtype)
    else:
        tap0, tap1 = (cupy.asarray(t, dtype=np.int32) for t in taps[:2])
        tapw = cupy.asarray(taps[2], dtype=dtype)

    per_warp_bytes = n_channels * (n_in + n_out + 2) * dtype.itemsize
    warps = min(_WARPS_PER_BLOCK, _SHARED_BYTES_LIMIT // per_warp_bytes)
    if warps < 1:
        raise ValueError(
            f"Series of {n_in} steps resampled to {n_out} do not fit the kernel's shared memory "
            f"({per_warp_bytes} bytes per pixel): resample to fewer steps or use NumPy arrays."
        )
    if n_pixels == 0:
        return out
    n_sm = _multiprocessor_count(out.device.id)
    grid = int(min(-(-n_pixels // warps), n_sm * _BLOCKS_PER_SM))
    real = dtype.type
    lo, hi = VALID_RANGE
    _kernel(dtype.char)(
        (grid,),
        (32 * warps,),
        (
            *arrays,
            tap0,
            tap1,
            tapw,
            out,
            np.int64(n_pixels),
            np.int32(n_channels),
            np.int32(n_in),
            np.int32(n_out),
            np.int32(from_reflectance),
            np.int32(taps is not None),
            np.int32(normalize),
            np.int32(clip),
            real(DENOMINATOR_EPS),
            real(L),
            real(1.0 + L),  # rounded once from double, as (1.0 + L) * (n - r) does on NumPy
            real(np.nan),
            real(lo),
            real(hi),
        ),
        shared_mem=warps * per_warp_bytes,
    )
    return out

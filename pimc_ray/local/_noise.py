"""Counter-based random numbers and smooth noise anchored to world coordinates (NumPy only).

Every random quantity of the sample archive is a hash of a stream key and integer coordinates, never the state
of a shared generator, so a value depends only on *what* it is (seed, UTM zone, field index, date) and not on
the order things were computed in. Fields and clouds defined this way continue seamlessly across two tiles
that share an edge.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import ArrayLike, NDArray

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def stream_key(*parts: int | str) -> int:
    """A stable 64-bit key for a named random stream (unlike ``hash()``, identical in every process)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _mix(h: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """The splitmix64 finaliser: a bijective scramble of 64-bit words (wraps silently on arrays)."""
    h = h + _GOLDEN
    h = (h ^ (h >> np.uint64(30))) * _MIX1
    h = (h ^ (h >> np.uint64(27))) * _MIX2
    return h ^ (h >> np.uint64(31))


def hash_uniform(key: int, *coords: ArrayLike) -> NDArray[np.float64]:
    """Uniform numbers in [0, 1), one per broadcast element of the integer ``coords``.

    Args:
        key: stream key from :func:`stream_key`.
        *coords: integer arrays (negative values allowed), broadcast together.
    """
    arrays = [np.asarray(c, dtype=np.int64) for c in coords]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    # at least 1-d: NumPy warns on integer overflow of scalars, and overflow is the point here
    h = _mix(np.full(shape or (1,), key & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64))
    for a in arrays:
        h = _mix(h ^ a.view(np.uint64))
    return ((h >> np.uint64(11)).astype(np.float64) * 2.0**-53).reshape(shape)


def value_noise(
    key: int, xs: NDArray[np.float64], ys: NDArray[np.float64], spacing: float
) -> NDArray[np.float32]:
    """Smooth value noise in [0, 1) on the grid ``ys x xs`` (world coordinates, metres).

    Lattice values at multiples of ``spacing`` are hashed from ``key`` and interpolated with smoothstep
    weights, so the field is continuous across tiles that share a CRS.

    Returns:
        float32 array of shape ``(len(ys), len(xs))``.
    """
    gx, gy = xs / spacing, ys / spacing
    ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    wx, wy = _smoothstep(gx - ix), _smoothstep(gy - iy)
    x0, y0 = int(ix.min()), int(iy.min())
    lx = np.arange(x0, int(ix.max()) + 2)
    ly = np.arange(y0, int(iy.max()) + 2)
    lattice = hash_uniform(key, ly[:, None], lx[None, :]).astype(np.float32)  # (ny, nx)
    jx, jy = ix - x0, iy - y0
    rows0, rows1 = lattice[jy], lattice[jy + 1]  # (len(ys), nx)
    top = rows0[:, jx] * (1 - wx) + rows0[:, jx + 1] * wx
    bottom = rows1[:, jx] * (1 - wx) + rows1[:, jx + 1] * wx
    return (top * (1 - wy)[:, None] + bottom * wy[:, None]).astype(np.float32)


def fbm(
    key: int, xs: NDArray[np.float64], ys: NDArray[np.float64], spacing: float, *, octaves: int = 4
) -> NDArray[np.float32]:
    """Fractal value noise in [0, 1): octave ``k`` has spacing ``spacing / 2**k`` and weight ``2**-k``."""
    total = np.zeros((len(ys), len(xs)), dtype=np.float32)
    norm = 0.0
    for k in range(octaves):
        weight = 0.5**k
        total += weight * value_noise(stream_key(key, k), xs, ys, spacing / 2**k)
        norm += weight
    return total / np.float32(norm)


def jittered_voronoi(
    key: int, x: NDArray[np.float64], y: NDArray[np.float64], cell: float, *, jitter: float = 0.8
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Index of the nearest site of a jittered grid, per point (a Voronoi tessellation by brute force).

    One site per ``cell x cell`` square, placed uniformly in its central ``jitter`` fraction; the nearest of
    the nine candidate squares around each point wins.

    Returns:
        ``(col, row)`` integer arrays shaped like ``x``: the grid square whose site is nearest.
    """
    cx, cy = np.floor(x / cell).astype(np.int64), np.floor(y / cell).astype(np.int64)
    margin = (1.0 - jitter) / 2
    best = np.full(x.shape, np.inf)
    best_col, best_row = cx.copy(), cy.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            col, row = cx + dx, cy + dy
            sx = (col + margin + jitter * hash_uniform(key, col, row, 0)) * cell
            sy = (row + margin + jitter * hash_uniform(key, col, row, 1)) * cell
            dist = (x - sx) ** 2 + (y - sy) ** 2
            closer = dist < best
            best = np.where(closer, dist, best)
            best_col = np.where(closer, col, best_col)
            best_row = np.where(closer, row, best_row)
    return best_col, best_row


def _smoothstep(t: NDArray[np.float64]) -> NDArray[np.float32]:
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)

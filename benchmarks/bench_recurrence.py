"""Recurrence-plot throughput: pimc-ray against pyts, and against a copy of the same number of bytes.

Everything runs in one process on the same inputs: ``--pixels`` pixels x 3 indices x T steps for each
``--steps`` value. Reported per implementation: pixels per second, output bytes per second, the speed-up over
pyts's ``RecurrencePlot`` and the ratio to a copy (``np.copyto`` / ``cupy.copyto``) of as many output bytes in
the same batches. Ratios against baselines measured in the same process are the figures to compare across
machines; absolute rates depend on the machine.

    python benchmarks/bench_recurrence.py                      # CPU, T = 32 and 61, 100,000 pixels
    python benchmarks/bench_recurrence.py --gpu --json out.json  # adds CuPy / fused-kernel rows

pyts is imported only here (and in tests), never by pimc_ray; where it is missing its rows are skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pimc_ray.kernels.indices import vegetation_indices  # noqa: E402
from pimc_ray.kernels.recurrence import recurrence_plot, rp_batch, rp_from_reflectance  # noqa: E402
from pimc_ray.kernels.xp import cupy_available, import_cupy, to_numpy, to_torch  # noqa: E402


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _reflectance(n_pixels: int, n_steps: int, seed: int = 0) -> list[np.ndarray[Any, Any]]:
    """Blue, red, NIR ``(pixel, time)`` float32 surface reflectance in ranges where every index is defined
    (NIR >= 0.05, blue <= 0.1 keep the denominators away from 0), so pyts, which refuses NaN, takes them."""
    rng = np.random.default_rng(seed)
    ranges = ((0.0, 0.1), (0.0, 0.3), (0.05, 0.6))
    return [rng.uniform(lo, hi, (n_pixels, n_steps)).astype(np.float32) for lo, hi in ranges]


def _best(fn: Callable[[], Any], repeats: int, sync: Callable[[], Any] = lambda: None) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def _batches(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def bench_cpu(n_steps: int, args: argparse.Namespace, pyts_rp: Any) -> list[dict[str, Any]]:
    """CPU rows for one series length."""
    blue, red, nir = _reflectance(args.pixels, n_steps)
    series = vegetation_indices(blue, red, nir, axis=1)  # (pixel, index, time) float32
    batches = _batches(args.pixels, args.batch)
    out = np.zeros((args.batch, 3, n_steps, n_steps), np.float32)  # reused like the pipeline's buffer
    src = np.ones_like(out)
    out_bytes = args.pixels * 3 * n_steps * n_steps * 4
    rows: list[dict[str, Any]] = []

    def run_rp_batch() -> None:
        for b in batches:
            rp_batch(series[b], out=out[: b.stop - b.start])

    def run_from_reflectance() -> None:
        for b in batches:
            rp_from_reflectance(blue[b], red[b], nir[b], out=out[: b.stop - b.start])

    def run_copy() -> None:
        for b in batches:
            n = b.stop - b.start
            np.copyto(out[:n], src[:n])

    t_copy = _best(run_copy, args.repeats)
    rows.append({"impl": "numpy copy (baseline)", "seconds": t_copy})
    rows.append({"impl": "pimc rp_batch (numpy)", "seconds": _best(run_rp_batch, args.repeats)})
    rows.append(
        {"impl": "pimc rp_from_reflectance (numpy)", "seconds": _best(run_from_reflectance, args.repeats)}
    )

    if pyts_rp is not None:
        n_pyts = min(args.pyts_pixels, args.pixels)
        flat = series[:n_pyts].reshape(-1, n_steps)  # (pixel * index, time)
        chunk = args.batch * 3
        start = time.perf_counter()
        first = None
        for s in range(0, flat.shape[0], chunk):
            plots = pyts_rp().transform(flat[s : s + chunk])  # float64
            if first is None:
                first = plots
        t_pyts = (time.perf_counter() - start) * args.pixels / n_pyts  # extrapolated if n_pyts < pixels
        ours = rp_batch(series[: first.shape[0] // 3])
        max_diff = float(np.abs(ours.reshape(first.shape) - first).max())
        rows.append({"impl": "pyts RecurrencePlot (float64)", "seconds": t_pyts, "pyts_pixels": n_pyts,
                     "max_abs_diff_vs_pimc_float32": max_diff})  # fmt: skip
    for row in rows:
        row.update(steps=n_steps, pixels=args.pixels, device="cpu", out_bytes=out_bytes)
    return rows


def bench_gpu(n_steps: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """GPU rows for one series length: fused kernel, array-generic CuPy path, copy baseline."""
    cp = import_cupy()
    host = _reflectance(args.pixels, n_steps)
    blue, red, nir = (cp.asarray(a) for a in host)
    series = vegetation_indices(blue, red, nir, axis=1)  # (pixel, index, time) on the GPU
    out = cp.zeros((args.pixels, 3, n_steps, n_steps), cp.float32)
    src = cp.ones_like(out)
    out_bytes = out.nbytes
    sync = cp.cuda.get_current_stream().synchronize
    half = n_steps // 2 + 1
    small = cp.zeros((args.pixels, 3, half, half), cp.float32)
    rows: list[dict[str, Any]] = [
        {"impl": "cupy copy (baseline)", "seconds": _best(lambda: cp.copyto(out, src), args.repeats, sync)},
        {"impl": "pimc rp_from_reflectance (fused kernel)",
         "seconds": _best(lambda: rp_from_reflectance(blue, red, nir, out=out), args.repeats, sync)},
        {"impl": "pimc rp_batch (fused kernel, series in)",
         "seconds": _best(lambda: rp_batch(series, out=out), args.repeats, sync)},
        {"impl": "pimc recurrence_plot (array-generic cupy)",
         "seconds": _best(lambda: recurrence_plot(series, out=out), args.repeats, sync)},
        {"impl": f"pimc rp_from_reflectance size={half} normalize=max (fused)",
         "seconds": _best(lambda: rp_from_reflectance(blue, red, nir, size=half, normalize="max", out=small),
                          args.repeats, sync), "out_bytes": small.nbytes},
    ]  # fmt: skip
    # Agreement with the NumPy path (itself pinned to pyts by the tests) on the first pixels.
    n_check = min(args.pixels, 4096)
    gpu = to_numpy(rp_from_reflectance(blue[:n_check], red[:n_check], nir[:n_check]))
    cpu = rp_from_reflectance(*(a[:n_check] for a in host))
    rows[1]["max_abs_diff_vs_numpy"] = float(np.abs(gpu - cpu).max())
    rows[1]["bitwise_equal_fraction_vs_numpy"] = float((gpu == cpu).mean())
    tensor = to_torch(out)
    rows[1]["torch_zero_copy"] = bool(tensor.is_cuda and tensor.data_ptr() == out.data.ptr)
    for row in rows:
        row.setdefault("out_bytes", out_bytes)
        row.update(
            steps=n_steps, pixels=args.pixels, device=cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
        )
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| T | device | implementation | pixels/s | output GB/s | x pyts | / copy |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        same = [r for r in rows if r["steps"] == row["steps"]]
        pyts = next((r for r in same if r["impl"].startswith("pyts")), None)
        copy = next((r for r in same if r["device"] == row["device"] and "copy" in r["impl"]), None)
        rate = row["pixels"] / row["seconds"]
        gbps = row["out_bytes"] / row["seconds"] / 1e9
        vs_pyts = f"{pyts['seconds'] / row['seconds']:.1f}" if pyts else "n/a"
        vs_copy = (
            f"{copy['seconds'] * row['out_bytes'] / copy['out_bytes'] / row['seconds']:.2f}" if copy else ""
        )
        cells = (row["steps"], row["device"], row["impl"], f"{rate:,.0f}", f"{gbps:.2f}", vs_pyts, vs_copy)
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pixels", type=int, default=100_000, help="pixels (each 3 index series)")
    parser.add_argument("--steps", type=int, nargs="+", default=[32, 61], help="series lengths T")
    parser.add_argument("--batch", type=int, default=8192, help="CPU pixels per batch (output buffer reused)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best kept), after a warm-up")
    parser.add_argument("--pyts-pixels", type=int, default=100_000, help="pixels given to pyts (rate scaled)")
    parser.add_argument("--no-pyts", action="store_true", help="skip pyts")
    parser.add_argument("--gpu", action="store_true", help="add CuPy rows (needs CUDA)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    pyts_rp = None
    if not args.no_pyts:
        try:
            start = time.perf_counter()
            from pyts.image import RecurrencePlot  # noqa: PLC0415 - test oracle only, ~20-30 s to import

            pyts_rp = RecurrencePlot
            print(f"pyts imported in {time.perf_counter() - start:.1f} s (not timed below)", file=sys.stderr)
        except ImportError:
            print("pyts is not installed: its rows are skipped", file=sys.stderr)
    if args.gpu and not cupy_available():
        print("--gpu: CuPy or a CUDA device is missing: GPU rows are skipped", file=sys.stderr)
        args.gpu = False

    rows: list[dict[str, Any]] = []
    for n_steps in args.steps:
        rows += bench_cpu(n_steps, args, pyts_rp)
        if args.gpu:
            rows += bench_gpu(n_steps, args)
    print(_table(rows))
    if args.json:
        meta = {
            "cpu": _cpu_model(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pyts": sys.modules["pyts"].__version__ if "pyts" in sys.modules else None,
            "cupy": sys.modules["cupy"].__version__ if "cupy" in sys.modules else None,
            "date": time.strftime("%Y-%m-%d"),
            "argv": sys.argv[1:] if argv is None else argv,
        }
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

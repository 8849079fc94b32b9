"""Backend selection by the inputs, the CuPy install hint, and zero-copy hand-off to torch."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from pimc_ray.kernels import xp as xp_module
from pimc_ray.kernels.xp import (
    GPU_INSTALL_HINT,
    array_namespace,
    cupy_available,
    import_cupy,
    is_cupy_array,
    to_numpy,
    to_torch,
)


def test_numpy_inputs_scalars_and_none_select_numpy():
    a = np.zeros(3)
    assert array_namespace(a) is np
    assert array_namespace(a, None, 1.5, 2, np.float32(1)) is np
    assert array_namespace() is np
    assert array_namespace([1, 2]) is np


def test_to_numpy_passes_numpy_through_without_copy():
    a = np.arange(4.0)
    assert to_numpy(a) is a
    np.testing.assert_array_equal(to_numpy([1.0, 2.0]), [1.0, 2.0])


def test_cupy_available_agrees_with_the_cuda_runtime():
    """Asked independently: CuPy imports and its CUDA runtime counts a device (False here without a GPU)."""
    try:
        import cupy

        expected = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: all mean "no GPU"
        expected = False
    assert cupy_available() is expected


def test_cupy_available_is_false_without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    assert xp_module.cupy_available.__wrapped__() is False


def test_missing_cupy_raises_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(ImportError, match=r"pimc-ray\[gpu\]") as info:
        import_cupy()
    assert GPU_INSTALL_HINT in str(info.value)


class _ForeignGpuArray:
    """Stands for a GPU array of another library (e.g. a CUDA torch tensor): only the protocol matters."""

    __cuda_array_interface__: dict[str, object] = {}


def test_foreign_gpu_arrays_are_refused_with_a_conversion_hint():
    assert not is_cupy_array(_ForeignGpuArray())
    with pytest.raises(TypeError, match="cupy.from_dlpack"):
        array_namespace(_ForeignGpuArray())


def test_to_torch_shares_numpy_memory():
    a = np.zeros((2, 3), np.float32)
    t = to_torch(a)
    t[0, 1] = 5.0
    assert a[0, 1] == 5.0
    assert t.dtype.is_floating_point and tuple(t.shape) == (2, 3)


@pytest.mark.gpu
def test_cupy_inputs_select_cupy_and_mixing_is_refused():
    cp = import_cupy()
    g = cp.zeros(3)
    assert is_cupy_array(g)
    assert array_namespace(g, None, 2.0) is cp
    with pytest.raises(TypeError, match="mixed"):
        array_namespace(g, np.zeros(3))
    np.testing.assert_array_equal(to_numpy(cp.arange(3.0)), [0.0, 1.0, 2.0])


@pytest.mark.gpu
def test_to_torch_keeps_cupy_arrays_on_the_gpu_without_copy():
    cp = import_cupy()
    g = cp.arange(6, dtype=cp.float32).reshape(2, 3)
    t = to_torch(g)
    assert t.is_cuda and tuple(t.shape) == (2, 3)
    assert t.data_ptr() == g.data.ptr
    t[1, 2] = -1.0
    cp.cuda.get_current_stream().synchronize()
    assert float(g[1, 2]) == -1.0

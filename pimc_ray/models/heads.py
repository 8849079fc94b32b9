"""Heads on frozen embeddings: a multinomial logistic-regression classifier and a linear index forecaster.

Both standardise embeddings with the training set's mean and standard deviation, then apply one linear layer:

* :class:`LinearClassifier` is fit with L-BFGS from zero weights on the full (small) labelled set with a little L2
  regularisation (so the same pixels give the same head in every process);
* :class:`LinearForecaster` predicts the next steps of NDVI, EVI and SAVI as each index's change from its last
  value on the grid, by ridge regression solved in closed form (:class:`LinearRegressor`).

Both are saved as safetensors plus JSON like the encoders, in a local folder or under a URI
(:mod:`pimc_ray.storage`), the JSON last.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pimc_ray.errors import CheckpointError
from pimc_ray.storage import UriLike, join_uri, normalize_uri, read_bytes_or_none, staged_folder

__all__ = ["HEAD_CONFIG", "HEAD_WEIGHTS", "Head", "LinearClassifier", "LinearForecaster", "LinearRegressor"]

#: The files of a saved head: its weights, and its dimension and classes (written last).
HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head.json"


class Head(Protocol):
    """What a map needs of a classification head: class ids and names, predictions, and a colour map."""

    class_ids: list[int]
    class_names: dict[int, str]

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(class ids (N,), confidence (N,) float32)`` of embeddings ``x`` (N, dim)."""
        ...

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour map (value -> RGBA) of the classes."""
        ...


class LinearClassifier(nn.Module):
    """Logistic regression over ``n_classes`` classes whose ids are ``class_ids`` (e.g. land-cover codes).

    Args:
        dim: embedding size.
        class_ids: the label value of each output (ids need not be contiguous).
        class_names: a human name per class id.
        class_colors: an RGB hex colour (``"1f78b4"``) per class id, for colour maps.
    """

    def __init__(
        self,
        dim: int,
        class_ids: Sequence[int],
        class_names: Mapping[int, str] | None = None,
        class_colors: Mapping[int, str] | None = None,
    ) -> None:
        super().__init__()
        if len(class_ids) < 2:
            raise ValueError(f"a classifier needs at least two classes, got {list(class_ids)}")
        self.class_ids = [int(c) for c in class_ids]
        self.class_names = {int(k): str(v) for k, v in (class_names or {}).items()}
        self.class_colors = {int(k): str(v).lstrip("#") for k, v in (class_colors or {}).items()}
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.zeros(dim))  # standardisation of the training set's embeddings
        self.register_buffer("std", torch.ones(dim))
        self.linear = nn.Linear(dim, len(self.class_ids))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, dim) -> logits (N, n_classes)
        return self.linear((x - self.mean) / self.std)

    def fit(self, x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, max_iter: int = 200) -> LinearClassifier:
        """Fit on embeddings ``x`` (N, dim) and label values ``y`` (N,) drawn from ``class_ids``."""
        xt = torch.as_tensor(x, dtype=torch.float32)
        index = {c: i for i, c in enumerate(self.class_ids)}
        unknown = sorted(set(np.unique(y).tolist()) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classifier's classes {self.class_ids}")
        yt = torch.as_tensor([index[int(v)] for v in y], dtype=torch.long)
        self.mean.copy_(xt.mean(0))
        self.std.copy_(xt.std(0).clamp_min(1e-6))
        # L-BFGS stops after max_iter, so where it starts shows in the head: start from zero, not from torch's
        # random init, whose seed differs from process to process, so that the same pixels give the same head.
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()
        optimizer = torch.optim.LBFGS(
            self.linear.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe"
        )
        loss_fn = nn.CrossEntropyLoss()

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = loss_fn(self(xt), yt) + l2 * self.linear.weight.square().sum()
            loss.backward()
            return loss

        self.train()
        optimizer.step(closure)
        self.eval()
        return self

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour map (value -> RGBA) of the classes; 0 (nodata) is transparent."""
        cmap = {0: (0, 0, 0, 0)}
        for cid, hexa in self.class_colors.items():
            cmap[cid] = (int(hexa[0:2], 16), int(hexa[2:4], 16), int(hexa[4:6], 16), 255)
        return cmap

    @property
    def dim(self) -> int:
        """The size of the embeddings it classifies."""
        return int(self.mean.shape[0])

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(class ids (N,) int64, confidence (N,) float32)`` for embeddings ``x`` (N, dim)."""
        probs = torch.softmax(self(torch.as_tensor(x, dtype=torch.float32)), dim=1)
        conf, idx = probs.max(dim=1)
        ids = np.asarray(self.class_ids, dtype=np.int64)[idx.numpy()]
        return ids, conf.numpy().astype(np.float32)

    def save(self, folder: UriLike) -> str:
        """Write ``head.safetensors``, then ``head.json``, into ``folder`` (a local path or a URI; other files there
        are kept); returns the folder as a normalised URI."""
        meta = {
            "dim": int(self.mean.shape[0]),
            "class_ids": self.class_ids,
            "class_names": self.class_names,
            "class_colors": self.class_colors,
        }
        return _save(self, folder, meta)

    @classmethod
    def load(cls, folder: UriLike) -> LinearClassifier:
        """Read a head written by :meth:`save` from a local folder or a URI.

        Raises:
            CheckpointError: a file is missing or unreadable, or the weights do not fit ``head.json``.
            StorageError: the folder's store cannot be reached.
        """

        def build(meta: dict[str, Any]) -> LinearClassifier:
            if meta.get("kind") == "forecast":
                raise ValueError("it is a forecast head: pass it to --forecast-head")
            names = {int(k): v for k, v in meta["class_names"].items()}
            colors = {int(k): v for k, v in meta.get("class_colors", {}).items()}
            return cls(meta["dim"], meta["class_ids"], names, colors)

        return _load(folder, build, "classification head")


class LinearRegressor(nn.Module):
    """Ridge regression on standardised features: ``(N, dim)`` -> ``(N, out_dim)``.

    Args:
        dim: feature size.
        out_dim: number of regression targets.
    """

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, dim) -> (N, out_dim)
        return self.linear((x - self.mean) / self.std)

    def fit(self, x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3) -> LinearRegressor:
        """Closed-form ridge on standardised ``x`` (N, dim) for targets ``y`` (N, out_dim), in float64.

        Minimises ``mean ||y - W z - b||^2 + l2 ||W||^2`` over the standardised features ``z``: the bias is the
        targets' mean, ``W = (Z^T Z / N + l2 I)^-1 Z^T (Y - mean) / N``.
        """
        x64 = torch.as_tensor(x, dtype=torch.float64)
        y64 = torch.as_tensor(y, dtype=torch.float64)
        mean, std = x64.mean(0), x64.std(0).clamp_min(1e-6)
        z = (x64 - mean) / std
        y_mean = y64.mean(0)
        n = max(len(z), 1)
        gram = z.T @ z / n + l2 * torch.eye(z.shape[1], dtype=torch.float64)
        weight = torch.linalg.solve(gram, z.T @ (y64 - y_mean) / n)  # (dim, out_dim)
        with torch.no_grad():
            self.mean.copy_(mean.float())
            self.std.copy_(std.float())
            self.linear.weight.copy_(weight.T.float())
            self.linear.bias.copy_(y_mean.float())
        return self.eval()


class LinearForecaster(nn.Module):
    """The next ``horizon`` steps of NDVI, EVI and SAVI from an embedding that holds the index series.

    A forecast is each index's last value on the grid plus a change predicted by ridge regression on the whole
    standardised embedding, clipped to [-1, 1] as the indices are. The last values are read from the embedding
    itself (``last``: the positions of NDVI, EVI and SAVI at the grid's last step, see
    :func:`~pimc_ray.mapping.forecast.last_positions`), so the head needs nothing but the embedding, as a
    classification head. Predicting the change rather than the value is what ``pimc eval pastis`` does too:
    recurrence plots hold distances between dates, not the series' level.

    Args:
        dim: embedding size.
        horizon: steps forecast, each one grid step after the one before.
        last: the embedding positions of NDVI, EVI and SAVI at the grid's last step.
        steps: grid steps of the series the head was fit on.
        step_days: the grid's step in days (the forecast's step too).
    """

    def __init__(self, dim: int, horizon: int, last: Sequence[int], steps: int, step_days: float) -> None:
        super().__init__()
        if horizon < 1:
            raise ValueError(f"a forecast needs a horizon of at least one step, got {horizon}")
        if len(last) != 3 or not all(0 <= int(i) < dim for i in last):
            raise ValueError(f"last must hold three positions in an embedding of {dim}, got {list(last)}")
        self.horizon, self.last = int(horizon), [int(i) for i in last]
        self.steps, self.step_days = int(steps), float(step_days)
        self.regressor = LinearRegressor(dim, 3 * self.horizon)

    @property
    def dim(self) -> int:
        """The size of the embeddings it forecasts from."""
        return int(self.regressor.mean.shape[0])

    def _last(self, x: np.ndarray) -> np.ndarray:
        return x[:, self.last, None]  # (N, 3, 1)

    def fit(self, x: np.ndarray, future: np.ndarray, *, l2: float = 1e-3) -> LinearForecaster:
        """Fit on embeddings ``x`` (N, dim) and the indices that followed, ``future`` (N, 3, horizon)."""
        if future.shape[1:] != (3, self.horizon):
            raise ValueError(f"expected (N, 3, {self.horizon}) future indices, got {future.shape}")
        change = (future - self._last(x)).reshape(len(x), -1)
        self.regressor.fit(x, change, l2=l2)
        return self.eval()

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(N, 3, horizon)`` float32 NDVI, EVI and SAVI forecast from embeddings ``x`` (N, dim)."""
        change = self.regressor(torch.as_tensor(x, dtype=torch.float32)).numpy()
        forecast = self._last(x) + change.reshape(len(x), 3, self.horizon)
        return np.clip(forecast, -1.0, 1.0).astype(np.float32)

    def save(self, folder: UriLike) -> str:
        """Write ``head.safetensors``, then ``head.json``, into ``folder``; returns the folder as a URI."""
        meta = {
            "kind": "forecast",
            "dim": self.dim,
            "horizon": self.horizon,
            "last": self.last,
            "steps": self.steps,
            "step_days": self.step_days,
        }
        return _save(self, folder, meta)

    @classmethod
    def load(cls, folder: UriLike) -> LinearForecaster:
        """Read a forecaster written by :meth:`save` (see :meth:`LinearClassifier.load`)."""

        def build(meta: dict[str, Any]) -> LinearForecaster:
            if meta.get("kind") != "forecast":
                raise ValueError("it is not a forecast head (a classification head?)")
            return cls(meta["dim"], meta["horizon"], meta["last"], meta["steps"], meta["step_days"])

        return _load(folder, build, "forecast head")


def _save(head: nn.Module, folder: UriLike, meta: Mapping[str, Any]) -> str:
    """Write a head's weights, then its ``meta`` (last: a folder with it is whole), into ``folder``."""
    from safetensors.torch import save_file

    with staged_folder(folder, last=(HEAD_CONFIG,), replace=False) as tmp:
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp / HEAD_WEIGHTS))
        (tmp / HEAD_CONFIG).write_text(json.dumps(meta, indent=2))
    return normalize_uri(folder)


def _load(folder: UriLike, build: Callable[[dict[str, Any]], nn.Module], what: str) -> Any:
    """The head in ``folder``: ``build(meta)`` with the saved weights loaded, in eval mode.

    Raises:
        CheckpointError: a file is missing or unreadable, or the weights do not fit the meta.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    folder = normalize_uri(folder)
    blobs = {name: read_bytes_or_none(join_uri(folder, name)) for name in (HEAD_CONFIG, HEAD_WEIGHTS)}
    try:
        missing = [name for name, blob in blobs.items() if blob is None]
        if missing:
            raise FileNotFoundError(f"no {' and no '.join(missing)}")
        head = build(json.loads(blobs[HEAD_CONFIG] or b""))
        head.load_state_dict(load(blobs[HEAD_WEIGHTS] or b""))
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as err:
        raise CheckpointError(f"cannot load the {what} in {folder} ({err})") from err
    return head.eval()

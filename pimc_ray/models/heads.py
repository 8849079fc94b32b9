"""Heads on frozen embeddings: a multinomial logistic-regression classifier.

The classifier standardises embeddings with the training set's mean and standard deviation, then applies one
linear layer; it is fit with L-BFGS from zero weights on the full (small) labelled set with a little L2
regularisation (so the same pixels give the same head in every process), and saved as safetensors plus JSON like
the encoders, in a local folder or under a URI (:mod:`pimc_ray.storage`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pimc_ray.errors import CheckpointError
from pimc_ray.storage import UriLike, join_uri, normalize_uri, read_bytes_or_none, staged_folder

__all__ = ["HEAD_CONFIG", "HEAD_WEIGHTS", "Head", "LinearClassifier"]

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
        from safetensors.torch import save_file

        meta = {
            "dim": int(self.mean.shape[0]),
            "class_ids": self.class_ids,
            "class_names": self.class_names,
            "class_colors": self.class_colors,
        }
        with staged_folder(folder, last=(HEAD_CONFIG,), replace=False) as tmp:
            save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp / HEAD_WEIGHTS))
            (tmp / HEAD_CONFIG).write_text(json.dumps(meta, indent=2))
        return normalize_uri(folder)

    @classmethod
    def load(cls, folder: UriLike) -> LinearClassifier:
        """Read a head written by :meth:`save` from a local folder or a URI.

        Raises:
            CheckpointError: a file is missing or unreadable, or the weights do not fit ``head.json``.
            StorageError: the folder's store cannot be reached.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load

        folder = normalize_uri(folder)
        blobs = {name: read_bytes_or_none(join_uri(folder, name)) for name in (HEAD_CONFIG, HEAD_WEIGHTS)}
        try:
            missing = [name for name, blob in blobs.items() if blob is None]
            if missing:
                raise FileNotFoundError(f"no {' and no '.join(missing)}")
            meta: dict[str, Any] = json.loads(blobs[HEAD_CONFIG] or b"")
            names = {int(k): v for k, v in meta["class_names"].items()}
            colors = {int(k): v for k, v in meta.get("class_colors", {}).items()}
            head = cls(meta["dim"], meta["class_ids"], names, colors)
            head.load_state_dict(load(blobs[HEAD_WEIGHTS] or b""))
        except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as err:
            raise CheckpointError(f"cannot load the classification head in {folder} ({err})") from err
        return head.eval()

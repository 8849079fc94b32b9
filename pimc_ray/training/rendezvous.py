"""DDP's rendezvous store bound to the node's address, not to every interface.

Ray Train's torch backend starts the process group with ``init_method="env://"``: rank 0 hosts torch's
``TCPStore`` on a free port, and that store listens on all interfaces (``*:PORT``), while Ray, the STAC API and the
S3 store of a local run listen on loopback only. :class:`BoundTorchConfig` replaces that start: rank 0 binds a
socket to its Ray node's address (127.0.0.1 for a local run, the node's IP on a cluster), hosts the store on that
socket (``master_listen_fd``), and every rank joins the process group through it. The rest (shutdown, the
per-worker environment) is Ray Train's.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
from dataclasses import dataclass
from typing import Any

import ray
import torch.distributed as dist
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

__all__ = ["BoundTorchConfig"]

logger = logging.getLogger(__name__)

#: Rank 0's store and the socket it listens on, kept alive for the process group's lifetime.
_HOSTED: tuple[dist.TCPStore, socket.socket] | None = None


@dataclass
class BoundTorchConfig(TorchConfig):
    """:class:`ray.train.torch.TorchConfig` whose rendezvous store listens on the node's address only."""

    @property
    def backend_cls(self) -> type[_TorchBackend]:
        return _BoundTorchBackend


class _BoundTorchBackend(_TorchBackend):
    def on_start(self, worker_group: Any, backend_config: TorchConfig) -> None:  # type: ignore[override]
        if backend_config.backend is None:
            raise ValueError("BoundTorchConfig needs an explicit backend (gloo or nccl)")
        world = len(worker_group)
        worker_group.execute(_set_torch_distributed_env_vars)
        address, port = worker_group.execute_single(0, _host_store, world, backend_config.timeout_s)
        logger.info("process group rendezvous at %s:%d (%d workers)", address, port, world)
        ray.get(
            [
                worker_group.execute_single_async(
                    rank, _join, backend_config.backend, rank, world, address, port, backend_config.timeout_s
                )
                for rank in range(world)
            ]
        )


def _host_store(world: int, timeout_s: int) -> tuple[str, int]:
    """On rank 0: a TCPStore listening on this Ray node's address; returns where it listens."""
    global _HOSTED
    address = ray.util.get_node_ip_address()
    listener = socket.create_server((address, 0))
    port = int(listener.getsockname()[1])
    store = dist.TCPStore(
        address,
        port,
        world,
        is_master=True,
        timeout=dt.timedelta(seconds=timeout_s),
        wait_for_workers=False,
        master_listen_fd=listener.fileno(),
    )
    _HOSTED = (store, listener)
    return address, port


def _join(backend: str, rank: int, world: int, address: str, port: int, timeout_s: int) -> None:
    """On every rank: join the process group through rank 0's store."""
    timeout = dt.timedelta(seconds=timeout_s)
    if rank == 0:
        assert _HOSTED is not None, "rank 0 joins after hosting the store"
        store = _HOSTED[0]
    else:
        store = dist.TCPStore(address, port, world, is_master=False, timeout=timeout)
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world, timeout=timeout)

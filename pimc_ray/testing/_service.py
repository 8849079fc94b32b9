"""What the project's local servers share: ``with Server(...) as server:`` starts one and always stops it."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class LocalService:
    """A process the project starts itself (STAC API, SeaweedFS, Ray head) and stops on leaving the block."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

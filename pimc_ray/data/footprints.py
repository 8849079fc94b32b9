"""Which items of a run cover a window: a spatial index over their footprints.

A run's items (thousands for a large area and a year) are searched once; every window then needs only the few
whose footprint meets it. Handing a window every item makes its set-up grow with the run (stackstac builds its
array from all of them); :class:`ItemIndex` answers with an STR-tree query instead, so the cost of a window
stays flat however many items the run holds (``benchmarks/bench_item_index.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import shapely
import shapely.geometry
from pyproj import Transformer

__all__ = ["ItemIndex", "footprint_lonlat"]

#: Points per edge when a window's box is reprojected to lon/lat (its edges curve in another CRS).
_EDGE_POINTS = 8


def footprint_lonlat(item: Mapping[str, Any]) -> shapely.Geometry:
    """An item's footprint in lon/lat: its ``geometry``, else its ``bbox`` (2-D or 3-D) as a box."""
    if item.get("geometry"):
        return shapely.geometry.shape(item["geometry"])
    bounds = list(item["bbox"])
    if len(bounds) == 6:  # 3-D bbox: (minx, miny, minz, maxx, maxy, maxz)
        bounds = [bounds[0], bounds[1], bounds[3], bounds[4]]
    return shapely.box(*bounds)


class ItemIndex:
    """The items of a run and an STR-tree over their lon/lat footprints (picklable: each worker holds one).

    :meth:`over` returns the items whose footprint meets a window, grown by ``margin`` pixels so that a window
    whose edge only touches an item still reads it, in the order the items were given.
    """

    def __init__(self, items: Sequence[Mapping[str, Any]], *, margin: int = 1) -> None:
        self.items = list(items)
        self.margin = margin
        self.tree = shapely.STRtree([footprint_lonlat(item) for item in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def over(self, epsg: int, bounds: tuple[float, float, float, float], resolution: float) -> list[Any]:
        """The items meeting ``bounds`` (a window's, in ``epsg``, pixels of ``resolution``) grown by the
        margin."""
        grow = self.margin * resolution
        xmin, ymin, xmax, ymax = bounds
        box = shapely.segmentize(
            shapely.box(xmin - grow, ymin - grow, xmax + grow, ymax + grow),
            max((xmax - xmin + 2 * grow) / _EDGE_POINTS, resolution),
        )
        to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
        area = shapely.transform(box, to_lonlat.transform, interleaved=False)
        hits = self.tree.query(area, predicate="intersects")
        return [self.items[i] for i in np.sort(hits)]

"""Data: from an area of interest and dates to regular-grid series of pixels, and the labels of pixels.

- :mod:`~pimc_ray.data.aoi`: AOI inputs normalised once (bbox, GeoJSON, file, ``__geo_interface__``);
- :mod:`~pimc_ray.data.stac`: STAC search, date ranges and frozen snapshots of items;
- :mod:`~pimc_ray.data.catalogs`: catalog conventions as data (Earth Search, Planetary Computer);
- :mod:`~pimc_ray.data.stack`: items to a lazy, harmonised, masked reflectance stack (stackstac);
- :mod:`~pimc_ray.data.timegrid`: gappy series to a regular time grid, with QA;
- :mod:`~pimc_ray.data.series`: one window's series, the data path every product shares;
- :mod:`~pimc_ray.data.tiles`: output grids per UTM zone, the fixed tile grid, windows;
- :mod:`~pimc_ray.data.labels`: label sources (GeoJSON, rasters, STAC) and class-balanced samples.

Data knows no model. Importing this package imports NumPy, xarray, shapely, pyproj and rasterio.
"""

from pimc_ray.data.aoi import AOI, load_aoi
from pimc_ray.data.catalogs import BANDS, CONVENTIONS, CatalogConvention, get_convention
from pimc_ray.data.labels import GeoJSONLabels, LabelSource, RasterLabels, StacLabels
from pimc_ray.data.series import SeriesReader, SeriesSpec, WindowSeries, read_series
from pimc_ray.data.stac import DateRange, frozen_search, load_snapshot, save_snapshot, search_items
from pimc_ray.data.stack import StackSpec, stack_reflectance
from pimc_ray.data.tiles import OutputGrid, Tile, TileGrid, Window, aoi_grids
from pimc_ray.data.timegrid import TimeGridSpec, regularize

__all__ = [
    "AOI",
    "BANDS",
    "CONVENTIONS",
    "CatalogConvention",
    "DateRange",
    "GeoJSONLabels",
    "LabelSource",
    "OutputGrid",
    "RasterLabels",
    "SeriesReader",
    "SeriesSpec",
    "StacLabels",
    "StackSpec",
    "Tile",
    "TileGrid",
    "TimeGridSpec",
    "Window",
    "WindowSeries",
    "aoi_grids",
    "frozen_search",
    "get_convention",
    "load_aoi",
    "load_snapshot",
    "read_series",
    "regularize",
    "save_snapshot",
    "search_items",
    "stack_reflectance",
]

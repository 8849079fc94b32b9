"""Test and demo helpers: the generated sample Sentinel-2 archive, a local STAC API, fixtures."""

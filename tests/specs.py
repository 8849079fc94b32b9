"""Archive specs shared by the tests."""

from pimc_ray.local.archive import ArchiveSpec

#: Small enough to build in a few seconds, large enough to hold every class: 128-pixel tiles.
TEST_SPEC = ArchiveSpec(tile_size=128)

"""Archive specs shared by the tests."""

from pimc_ray.local.archive import ArchiveSpec

#: Small enough to build in a few seconds, large enough to hold every class: 128-pixel tiles.
TEST_SPEC = ArchiveSpec(tile_size=128)

#: The default export's shape, small and on the 36-step grid: the index series beside a small RP encoder (what a
#: forecast head needs: the series in the embedding).
SERIES_RP_ENCODER = {
    "name": "pimc-concat",
    "params": {
        "parts": [
            {"name": "index-series", "params": {"steps": 36}},
            {"name": "rp-resnet", "params": {"widths": [8], "embed_dim": 4}},
        ]
    },
}

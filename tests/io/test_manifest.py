"""The run manifest: written at the start and the end of a run; in between, one status object per unit."""

from pimc_ray.io.manifest import RunManifest
from pimc_ray.storage import open_store


def test_a_unit_costs_one_status_object_and_loading_reads_them_over_the_manifest(tmp_path):
    store = open_store(tmp_path / "run")
    manifest = RunManifest("key1", "sha256:abc", {"tile_size": 64}, {})
    manifest.save(store)
    started = (tmp_path / "run" / "manifest.json").read_bytes()

    manifest.mark("32N_0_0", "done", files=["tiles/32N_0_0/embedding.tif"])
    manifest.publish(store, "32N_0_0")
    manifest.mark("32N_1_0", "failed", error="ValueError: boom")
    manifest.publish(store, "32N_1_0")
    assert (tmp_path / "run" / "manifest.json").read_bytes() == started  # not rewritten per unit
    (tmp_path / "run" / "status" / ".32N_2_0.json.x1.tmp").write_text("{")  # a put in flight: not a status

    resumed = RunManifest.load(store)  # e.g. after a crash: the statuses are what was published
    assert resumed is not None and (resumed.key, resumed.model) == ("key1", "sha256:abc")
    assert resumed.done() == {"32N_0_0"}
    assert resumed.tiles["32N_1_0"]["error"] == "ValueError: boom"

    resumed.mark("32N_1_0", "done", files=["tiles/32N_1_0/embedding.tif"])  # the rerun redoes the failed one
    resumed.publish(store, "32N_1_0")
    resumed.save(store)  # the end of the run: the manifest holds every unit
    final = store.get_json("manifest.json")
    assert {t: e["status"] for t, e in final["tiles"].items()} == {"32N_0_0": "done", "32N_1_0": "done"}
    assert RunManifest.load(store).tiles == final["tiles"]


def test_a_new_output_has_no_manifest(tmp_path):
    assert RunManifest.load(open_store(tmp_path / "empty")) is None

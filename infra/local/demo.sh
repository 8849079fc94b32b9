#!/usr/bin/env bash
# `make demo`: sample archive -> local STAC API -> local Ray head -> `ray job submit jobs/embed_aoi.py` -> maps.
# Everything it starts is stopped on exit, success or not. Override ARCHIVE, OUT, WORKERS in the environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ARCHIVE=${ARCHIVE:-$ROOT/data/archive}
OUT=${OUT:-$ROOT/out/demo}
WORKERS=${WORKERS:-2}
T0=$(date +%s)

echo "== 1/4 sample archive ($ARCHIVE)"
pimc archive build --out "$ARCHIVE"

read -r STAC_PORT GCS_PORT DASH_PORT < <(python -c \
  "from pimc_ray.testing.stac_server import free_port as f; print(f(), f(), f())")
RAY_TMP=$(mktemp -d /tmp/pimc-ray-XXXXXX)   # short: Ray's unix sockets live under it
STAC_PID=""; RAY_PID=""
cleanup() {
  [ -n "$RAY_PID" ] && kill "$RAY_PID" 2>/dev/null && wait "$RAY_PID" 2>/dev/null || true
  [ -n "$STAC_PID" ] && kill "$STAC_PID" 2>/dev/null && wait "$STAC_PID" 2>/dev/null || true
  rm -rf "$RAY_TMP"
}
trap cleanup EXIT

echo "== 2/4 local STAC API on 127.0.0.1:$STAC_PORT"
pimc stac serve --archive "$ARCHIVE" --port "$STAC_PORT" &
STAC_PID=$!
python -c "from pimc_ray.testing.stac_server import wait_until_up as w; w('http://127.0.0.1:$STAC_PORT/collections')"

echo "== 3/4 local Ray head (dashboard 127.0.0.1:$DASH_PORT)"
ray start --head --block --num-cpus=2 --port="$GCS_PORT" --node-ip-address=127.0.0.1 \
  --dashboard-host=127.0.0.1 --dashboard-port="$DASH_PORT" --temp-dir="$RAY_TMP" --disable-usage-stats \
  > "$RAY_TMP/ray-start.log" 2>&1 &
RAY_PID=$!
python -c "from pimc_ray.testing.stac_server import wait_until_up as w; w('http://127.0.0.1:$DASH_PORT/api/version', timeout=90)"
python -c "from pimc_ray.testing.ray_cluster import wait_for_job_agent as w; w('http://127.0.0.1:$DASH_PORT')"

echo "== 4/4 ray job submit jobs/embed_aoi.py"
ray job submit --address "http://127.0.0.1:$DASH_PORT" -- \
  python "$ROOT/jobs/embed_aoi.py" \
    --aoi "$(pimc archive bbox --demo)" --start 2022-01-01 --end 2022-12-31 \
    --stac-url "http://127.0.0.1:$STAC_PORT" --collection sentinel-2-l2a \
    --head-train-aoi "$(pimc archive bbox --train)" --labels-collection pimc-sample-labels \
    --workers "$WORKERS" --out "$OUT"

echo
echo "demo finished in $(( $(date +%s) - T0 )) s. Maps are in $OUT:"
ls -1 "$OUT"
echo "Open them in QGIS, or: .venv/bin/python -c \"import rasterio; print(rasterio.open('$OUT/classes_epsg32632.tif').profile)\""

#!/usr/bin/env bash
# `make demo`: sample archive -> local STAC API + local S3 (SeaweedFS) + local Ray head
#              -> `ray job submit jobs/pretrain.py` (PIMC pretraining on three training tiles, two DDP workers)
#              -> `ray job submit jobs/embed_aoi.py` with that encoder -> per-tile COGs, STAC items and mosaics
#                 in s3://pimc-demo/demo.
# A rerun finds the finished training run in data/models/runs and only re-exports its encoder.
# Everything it starts is stopped on exit, success or not; the bucket's data stays in data/s3 for later browsing.
# Override ARCHIVE, S3_DATA, OUT, WORKERS, MODEL, TRAIN_STEPS in the environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ARCHIVE=${ARCHIVE:-$ROOT/data/archive}
S3_DATA=${S3_DATA:-$ROOT/data/s3}
OUT=${OUT:-s3://pimc-demo/demo}
WORKERS=${WORKERS:-2}
MODEL=${MODEL:-$ROOT/data/models/pimc-demo}
TRAIN_STEPS=${TRAIN_STEPS:-300}
T0=$(date +%s)

echo "== 1/6 sample archive ($ARCHIVE)"
pimc archive build --out "$ARCHIVE"

read -r STAC_PORT GCS_PORT DASH_PORT < <(python -c \
  "from pimc_ray.local import free_port as f; print(f(), f(), f())")
RUN_TMP=$(mktemp -d /tmp/pimc-demo-XXXXXX)   # short: Ray's unix sockets live under it
STAC_PID=""; S3_PID=""; RAY_PID=""
cleanup() {
  for pid in $RAY_PID $STAC_PID $S3_PID; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
  rm -rf "$RUN_TMP"
}
trap cleanup EXIT

echo "== 2/6 local STAC API on 127.0.0.1:$STAC_PORT"
pimc stac serve --archive "$ARCHIVE" --port "$STAC_PORT" > "$RUN_TMP/stac.log" 2>&1 &
STAC_PID=$!
python -c "from pimc_ray.local import wait_until_up as w; w('http://127.0.0.1:$STAC_PORT/collections')"

echo "== 3/6 local S3 (SeaweedFS, data in $S3_DATA), bucket pimc-demo"
mkdir -p "$S3_DATA"
pimc s3 serve --bucket pimc-demo --data-dir "$S3_DATA" --env-file "$RUN_TMP/s3.env" > "$RUN_TMP/s3.log" 2>&1 &
S3_PID=$!
for _ in $(seq 1 120); do [ -f "$RUN_TMP/s3.env" ] && break; sleep 0.5; done
[ -f "$RUN_TMP/s3.env" ] || { cat "$RUN_TMP/s3.log"; echo "SeaweedFS did not start"; exit 1; }
set -a; source "$RUN_TMP/s3.env"; set +a   # endpoint and credentials for boto3, GDAL and the Ray head

echo "== 4/6 local Ray head (dashboard 127.0.0.1:$DASH_PORT)"
ray start --head --block --num-cpus=2 --port="$GCS_PORT" --node-ip-address=127.0.0.1 \
  --dashboard-host=127.0.0.1 --dashboard-port="$DASH_PORT" --temp-dir="$RUN_TMP" --disable-usage-stats \
  > "$RUN_TMP/ray-start.log" 2>&1 &
RAY_PID=$!
python -c "from pimc_ray.local import wait_until_up as w; w('http://127.0.0.1:$DASH_PORT/api/version', timeout=90)"
python -c "from pimc_ray.local import wait_for_job_agent as w; w('http://127.0.0.1:$DASH_PORT')"

echo "== 5/6 ray job submit jobs/pretrain.py ($TRAIN_STEPS steps on the training tiles -> $MODEL)"
ray job submit --address "http://127.0.0.1:$DASH_PORT" -- \
  python "$ROOT/jobs/pretrain.py" \
    --aoi "$(pimc archive bbox --tile 32TQR)" --aoi "$(pimc archive bbox --tile 32TQS)" \
    --aoi "$(pimc archive bbox --tile 33TTL)" --start 2022-01-01 --end 2022-12-31 \
    --stac-url "http://127.0.0.1:$STAC_PORT" --out "$MODEL" --train-steps "$TRAIN_STEPS" \
    --batch-size 256 --pixels-per-window 2048 --workers 2

echo "== 6/6 ray job submit jobs/embed_aoi.py (encoder: $MODEL)"
ray job submit --address "http://127.0.0.1:$DASH_PORT" -- \
  python "$ROOT/jobs/embed_aoi.py" --checkpoint "$MODEL" \
    --aoi "$(pimc archive bbox --demo)" --start 2022-01-01 --end 2022-12-31 \
    --stac-url "http://127.0.0.1:$STAC_PORT" --collection sentinel-2-l2a \
    --head-train-aoi "$(pimc archive bbox --train)" --labels-collection pimc-sample-labels \
    --tile-size 512 --workers "$WORKERS" --out "$OUT"

echo
echo "== the maps, read back from the bucket: notebooks/explore_run.py executed headless"
NB_OUT=$ROOT/out/notebooks
mkdir -p "$NB_OUT"
PIMC_RUN="$OUT/collection.json" PIMC_FIGURES="$NB_OUT/figures" \
  jupytext --to ipynb --execute "$ROOT/notebooks/explore_run.py" -o "$NB_OUT/explore_run.ipynb" \
  > "$RUN_TMP/notebook.log" 2>&1 || { tail -40 "$RUN_TMP/notebook.log"; echo "the notebook failed"; exit 1; }
python - "$NB_OUT/explore_run.ipynb" <<'PY'
import json, sys
outputs = [o for c in json.load(open(sys.argv[1]))["cells"] for o in c.get("outputs", [])]
print("".join("".join(o["text"]) for o in outputs if o.get("output_type") == "stream"), end="")
PY
echo "figures: $NB_OUT/figures/ (embedding_pca, classes_confidence_qa, pixel_series_rp, neighbours), notebook with"
echo "its outputs: $NB_OUT/explore_run.ipynb"
echo
echo "demo finished in $(( $(date +%s) - T0 )) s. Outputs: $OUT (manifest.json, collection.json,"
echo "tiles/<tile>/v1/{embedding,classes,qa}.tif + item.json, mosaic_*.gti.gpkg and mosaic_*.vrt), kept in $S3_DATA."
echo
echo "To open the notebooks in notebooks/ on them (explore_run: layers, a pixel's series and recurrence plots, its"
echo "nearest neighbours; map_run: an interactive map; head_from_points: a head from a few labelled points against"
echo "the run's classes; run_status: a scheduled run's status layer, here the demo's tiles from its manifest):"
echo "  .venv/bin/pimc s3 serve --bucket pimc-demo --data-dir $S3_DATA --env-file .cache/s3.env &"
echo "  set -a; source .cache/s3.env; set +a"
echo "  export PIMC_RUN=$OUT/collection.json PIMC_FIGURES=$NB_OUT/figures"
echo "  .venv/bin/pip install -e '.[notebooks]'   # JupyterLab, once"
echo "  .venv/bin/jupyter lab notebooks/     # right-click a .py, Open With > Notebook (jupytext pairs it with an .ipynb)"
echo "or headless, e.g. the interactive map (saved as \$PIMC_FIGURES/map.html):"
echo "  .venv/bin/jupytext --to ipynb --execute notebooks/map_run.py -o out/notebooks/map_run.ipynb"
echo "QGIS/GDAL read the mosaics too: /vsis3/${OUT#s3://}/mosaic_classes_epsg32632.gti.gpkg (GDAL >= 3.9; the .vrt"
echo "beside it is the same mosaic for any GDAL)."

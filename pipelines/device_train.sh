#!/usr/bin/env bash
# Continue the project's one training run, the variable-rate MGSSNet (pipelines/train_vr.py, issue 35),
# and run the first-GPU check (pipelines/gpu_check.py, issue 38) on a borrowed GPU: the workplace's
# `device` tool, one H100 / H200 with 16 cores, 15 device minutes per session, no internet, a copy of
# the working tree plus carried ignored paths, 64 MiB in all (tracked files included).
#
#   bash pipelines/device_train.sh prepare        # here: slim (below), pack the train/val splits of both stores
#                                                 # as JPEG q85 (.devpack/), fetch the wheels the GPU
#                                                 # image lacks (.whl/), check what travels
#   .venv/bin/python pipelines/export_wip.py runs/mgssnet-vr   # here: the CPU run's latest weights
#                                                 # into catalogs/models/wip (the device warm-starts
#                                                 # from that file; uncommitted is fine, it travels)
#   THE ONE DEVICE CALL: run(command="bash pipelines/device_train.sh session 4.5",
#                            carry=[".devpack", ".whl"], timeout_s=600)
#   then here, with the reply's files_at:
#   .venv/bin/python pipelines/device_vr.py --adopt <files_at>      # GPU weights -> wip + wip.json;
#       stop train_vr.py, move runs/mgssnet-vr aside, start train_vr.py again (warm-starts from them)
#   .venv/bin/python pipelines/gpu_check.py --catalog <files_at>/gpu_check.json   # figures -> catalog
#   bash pipelines/device_train.sh unslim          # the weight files `slim` left home, back
#
# Modes (on the device):
#   run MIN      mgssnet-vr warm-started from catalogs/models/wip/mgssnet-vr.pt, MIN minutes of
#                train_vr.py's recipe (g_a / g_s frozen, mixed quantization, stretch 0.25, 128 x 128
#                crops, lr 1e-4, every level at its lambda) in bf16 autocast at batch 32
#                (pipelines/device_vr.py); exports $OUT/mgssnet-vr.pt (fp16, export_wip.py's
#                format), $OUT/mgssnet-vr.json (steps done, speed, last validation), logs.tar.gz
#   gpu-check    pipelines/gpu_check.py into $OUT/gpu_check.json (throughput at batches 16/32/64,
#                GPU <-> CPU strings in float64, a 17408 x 17408 scene round trip)
#   session MIN  run MIN, then gpu-check in what is left of 570 s (its JSON is written stage by
#                stage, so a check cut short still returns its first figures); ~9.5 minutes
#
# What travels: the tool sends the working tree's tracked files too, ~155 MiB with every shipped,
# baseline and wip weight file (2026-12-06), over the 64 MiB a call may send. `prepare` first runs
# `slim`: it deletes from the working tree (not from git) the weight files the device does not use,
# keeping the variable-rate wip (training), the shipped default quality and its halo prior (the
# gpu check) and every small file; `unslim` (run it right after the device call, or any time)
# restores them from git. A file missing from the working tree does not travel.
# The scene stage of gpu-check needs the scene stack (rasterio, zarr, dask, distributed, ...):
# `prepare scene` fetches those wheels too (~50 MiB more; fewer train tiles then); without them the
# stage records the missing module and the other stages still run.
set -euo pipefail
cd "$(dirname "$0")/.."

LIMIT=$(( 62 * 1048576 ))  # the device tool's 64 MiB, 2 MiB spare

device_env() {  # on the device: the carried wheels, the repository on the path
    if ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
    fi
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    nvidia-smi -L || true
}

run_vr() {
    python3 pipelines/device_vr.py --minutes "$1" --out "$OUT" --run /tmp/runs/mgssnet-vr
    tar czf "$OUT/logs.tar.gz" --exclude train_state.pt -C /tmp/runs .
}

gpu_check() {
    timeout "${1:-540}" python3 pipelines/gpu_check.py --out "$OUT/gpu_check.json" --work-dir /tmp
}

# weight files the device needs; every other tracked *.pt stays home (`slim`)
KEEP_PT='^(catalogs/models/wip/mgssnet-vr\.pt|geocompress/weights/mgssnet-q3\.pt|geocompress/weights/mgssnet-q3-halo\.pt)$'

slim() {
    git ls-files '*.pt' | grep -Ev "$KEEP_PT" | while read -r f; do rm -f -- "$f"; done
    echo "slimmed: $(git ls-files -d | wc -l) weight files left home (bash $0 unslim restores them)"
}

case "${1:-}" in
slim)
    slim
    ;;
unslim)
    git ls-files -d -z | xargs -0 -r git checkout --
    echo "restored; missing tracked files now: $(git ls-files -d | wc -l)"
    ;;
prepare)
    slim
    mkdir -p .whl
    # what the GPU image (Python 3.12, torch, numpy, scipy, einops, matplotlib, tqdm, psutil,
    # nvidia-ml-py, pandas, torch-geometric) lacks for geocompress.models / codec / training
    wheels=(compressai==1.2.8 pytorch-msssim)
    if [ "${2:-}" = scene ]; then  # the scene path's stack, at this venv's versions
        for d in affine cligj click-plugins rasterio pyproj shapely zarr zarr-cm numcodecs donfig \
                 google-crc32c dask distributed partd locket tblib zict tornado lazy-importer; do
            v=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$d'))" 2>/dev/null) \
                && wheels+=("$d==$v")
        done
        wheels+=($(.venv/bin/python -m pip freeze 2>/dev/null | grep -i '^pystac' || true))
    fi
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d .whl "${wheels[@]}"
    tracked=$(git ls-files -z | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
              | xargs -0 du -cb | tail -1 | cut -f1)
    wheels_b=$(du -cb .whl | tail -1 | cut -f1)
    echo "tracked files: $(( tracked / 1048576 )) MiB; wheels: $(( wheels_b / 1048576 )) MiB"
    if [ $(( tracked + wheels_b )) -ge $LIMIT ]; then
        echo "the tracked files alone leave no room under the device tool's 64 MiB; largest:" >&2
        git ls-files -z | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
            | xargs -0 du -b | sort -n | tail -12 | awk '{printf "  %6.1f MiB  %s\n", $1/1048576, $2}' >&2
        exit 1
    fi
    # the packs get what is left: the extra store whole (its train split is repeated three times),
    # rs-v1 with fewer train tiles if need be
    GEOCOMPRESS_PACK_BYTES=$(( LIMIT - tracked - wheels_b )) .venv/bin/python - <<'PY'
import os
import numpy as np
from geocompress.training.pack import pack_splits
budget = int(os.environ["GEOCOMPRESS_PACK_BYTES"])
extra = pack_splits("data/geocompress-rs-extra-v1.zarr", ".devpack/rs-extra-v1-trainval.npz", quality=85)
budget -= extra.stat().st_size
limits = {"val": 32}
p = pack_splits("data/geocompress-rs-v1.zarr", ".devpack/rs-v1-trainval.npz", quality=85, limits=limits)
if p.stat().st_size > budget:
    n = len(np.load(p)["train_index"])
    limits["train"] = int(n * budget / p.stat().st_size * 0.97)
    p = pack_splits("data/geocompress-rs-v1.zarr", ".devpack/rs-v1-trainval.npz", quality=85, limits=limits)
for f in (p, extra):
    print(f, round(f.stat().st_size / 2**20, 1), "MiB")
print("rs-v1 limits", limits)
PY
    carried=$(du -cb .devpack .whl | tail -1 | cut -f1)
    echo "travels: $(( (tracked + carried) / 1048576 )) MiB of 64"
    [ $(( tracked + carried )) -lt $(( 63 * 1048576 )) ] || { echo "over the device tool's limit" >&2; exit 1; }
    ;;
run)
    device_env
    run_vr "${2:-4.5}"
    ls -la "$OUT"
    ;;
gpu-check)
    device_env
    gpu_check "${2:-540}"
    ;;
session)
    device_env
    rc=0
    run_vr "${2:-4.5}" || rc=$?
    left=$(( 570 - SECONDS ))
    echo "training done (rc $rc) at ${SECONDS} s; gpu check gets ${left} s"
    [ "$left" -gt 30 ] && { gpu_check "$left" || rc=$?; }
    ls -la "$OUT"
    exit $rc
    ;;
*)
    sed -n 2,40p "$0"
    exit 2
    ;;
esac

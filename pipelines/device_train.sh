#!/usr/bin/env bash
# Continue the shipped MGSSNet qualities on a borrowed GPU (the workplace's `device` tool: one H200,
# 15 minutes per session, a copy of this repository plus at most 64 MiB of carried files).
#
#   bash pipelines/device_train.sh prepare       # here: pack train/val as JPEG q85 (.devpack/),
#                                                # fetch the wheels the GPU box lacks (.whl/), check sizes
#   device run: command "bash pipelines/device_train.sh run 6.5", carry [".devpack", ".whl"], timeout_s 600
#   .venv/bin/python pipelines/ship_weights.py --checkpoints <files_at of that run>   # here: measure, ship
#
# On the GPU all four qualities train side by side (one process each, bf16 autocast), each
# warm-started from its shipped weights, for MIN minutes at lr 2e-4 (batch 8 of 256 x 256 crops,
# the paper's recipe; a quarter of them re-stretched band by band, as on the CPU since session 13)
# and 1.5 more at 1e-4; then they are exported as fp16 checkpoints into $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    mkdir -p .whl
    # what the GPU image (Python 3.12, torch, torchvision, numpy, scipy, einops, matplotlib, tqdm,
    # pandas, torch-geometric) lacks for geocompress.models / codec / training
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        compressai==1.2.8 pytorch-msssim
    tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
    wheels=$(du -cb .whl | tail -1 | cut -f1)
    # the pack gets what is left of the tool's 64 MiB (2 MiB spare); fewer train tiles if need be
    GEOCOMPRESS_PACK_BYTES=$(( 62 * 1048576 - tracked - wheels )) .venv/bin/python - <<'PY'
import os
from geocompress.training.pack import pack_splits
budget = int(os.environ["GEOCOMPRESS_PACK_BYTES"])
limits = {"val": 32}
p = pack_splits("data/geocompress-rs-v1.zarr", ".devpack/rs-v1-trainval.npz", quality=85, limits=limits)
if p.stat().st_size > budget:
    import numpy as np
    n = len(np.load(p)["train_index"])
    limits["train"] = int(n * budget / p.stat().st_size * 0.97)
    p = pack_splits("data/geocompress-rs-v1.zarr", ".devpack/rs-v1-trainval.npz", quality=85, limits=limits)
print(p, round(p.stat().st_size / 2**20, 1), "MiB", limits)
PY
    carried=$(du -cb .devpack .whl | tail -1 | cut -f1)
    echo "travels: $(( (tracked + carried) / 1048576 )) MiB of 64"
    [ $(( tracked + carried )) -lt $(( 63 * 1048576 )) ] || { echo "over the device tool's limit" >&2; exit 1; }
    ;;
run)
    minutes="${2:-6.5}"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    nvidia-smi -L
    python3 pipelines/train_qualities.py --from-shipped --device cuda \
        --dataset .devpack/rs-v1-trainval.npz --runs /tmp/runs --branch-min "$minutes" \
        --polish-min 1.5 --polish-lr 1e-4 --batch 8 --crop 256 --lr 2e-4 --quantization mixed --stretch 0.25 \
        --export-dir "$OUT"
    tar czf "$OUT/logs.tar.gz" --exclude train_state.pt -C /tmp/runs .
    ls -la "$OUT"
    ;;
*)
    sed -n 2,13p "$0"
    exit 2
    ;;
esac

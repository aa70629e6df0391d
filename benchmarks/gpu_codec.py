"""Superseded by ``pipelines/gpu_check.py`` (issue 38: the first GPU), which measures what this
script did (encode / decode tiles/s and MP/s at several batch sizes, the GPU's busy share) and
also checks GPU-written strings on the CPU path and the reverse in the exact mode, and round-trips
a whole scene. Kept as a name: it runs that script with the same arguments.

    python benchmarks/gpu_codec.py [--tiles 256] [--batches 16 32 64] [--checkpoint CKPT]
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv[0] = str(Path(__file__).resolve().parents[1] / "pipelines" / "gpu_check.py")
    runpy.run_path(sys.argv[0], run_name="__main__")

"""Training throughput on this CPU: float32 against the per-layer mixed mode (bf16 autocast for dense
convolutions and attention, float32 for depthwise convolutions and the entropy models), for every
registry architecture, in one run; and the training loss of both modes from the same seed over
the first steps of MGSSNet, to show the mixed mode tracks float32.

    .venv/bin/python benchmarks/train_speed.py [--threads 1] [--steps 4] [--track-steps 300]

Each step: batch 8 of 128 x 128 crops (random crops and flips of the sample scene, fixed seed),
forward, rate-distortion loss (lambda 0.0067), backward, Adam, the auxiliary loss and its Adam:
what ``geocompress.training.trainer`` does per step, on CPU (channels-last for models with depthwise
convolutions, as the trainer). Goal (issue 24):
mixed >= 2.5x float32 for MGSSNet N=64 / M=96; exit code 1 when missed, with the margin.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import sample_tiles  # noqa: E402

from geocompress.models import build  # noqa: E402
from geocompress.models.registry import names  # noqa: E402
from geocompress.training.loss import RateDistortionLoss  # noqa: E402
from geocompress.training.mixed_precision import prepare_layers  # noqa: E402
from geocompress.training.trainer import fused_adam, has_depthwise, split_parameters  # noqa: E402

CONFIGS = {"mgssnet": {"N": 64, "M": 96}, "cheng2020-attn": {"N": 64}}
DEFAULT = {"N": 64, "M": 96}
GOAL = 2.5


def batches(n: int, seed: int = 0):
    """``n`` batches of 8 random 128 x 128 crops (with flips) of the sample scene, as [0, 1]."""
    tiles = sample_tiles(16, size=256)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        crops = []
        for _ in range(8):
            t = tiles[rng.integers(len(tiles))]
            y, x = rng.integers(0, 128, 2)
            c = t[:, y:y + 128, x:x + 128]
            if rng.random() < 0.5:
                c = c[:, :, ::-1]
            crops.append(np.ascontiguousarray(c))
        yield torch.from_numpy(np.stack(crops).astype(np.float32) / 255).contiguous(
            memory_format=torch.channels_last)


MODES = ("float32", "float32+native", "mixed")


def trainer(arch: str, mode: str, seed: int = 0):
    """One training step of ``arch`` in ``mode``: ``float32`` is PyTorch's kernels and Adam as
    they come, ``float32+native`` the trainer's float32 (native depthwise weight gradient and
    SSIF-AM pooling kernels, fused Adam), ``mixed`` the trainer's default on this CPU (the same
    plus bf16 autocast per layer)."""
    torch.manual_seed(seed)
    model = build(arch, **CONFIGS.get(arch, DEFAULT)).train()
    layout = torch.channels_last if has_depthwise(model) else torch.contiguous_format
    model = model.to(memory_format=layout)  # as the trainer does (channels-last crashes cheng2020)
    mixed = mode == "mixed"
    if mode != "float32":
        prepare_layers(model, "cpu", amp=mixed)
    main_p, aux_p = split_parameters(model)
    fused = mode != "float32" and fused_adam(torch.device("cpu"))  # float32: PyTorch as it comes
    opt, aux_opt = torch.optim.Adam(main_p, 1e-4, fused=fused), torch.optim.Adam(aux_p, 1e-3, fused=fused)
    crit = RateDistortionLoss(0.0067)

    def step(x: torch.Tensor) -> float:
        x = x.contiguous(memory_format=layout)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
            out = model(x)
        loss = crit(out, x)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_p, 1.0)
        opt.step()
        aux_opt.zero_grad(set_to_none=True)
        model.aux_loss().backward()
        aux_opt.step()
        return float(loss.detach())

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per mode (after one warm-up)")
    ap.add_argument("--track-steps", type=int, default=300, help="loss-tracking steps (0: skip)")
    ap.add_argument("--archs", nargs="+", default=names())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    xs = list(batches(args.steps + 1))
    rows = []
    for arch in args.archs:
        times = {}
        for mode in MODES:
            step = trainer(arch, mode)
            step(xs[0])
            t = time.perf_counter()
            for x in xs[1:]:
                step(x)
            times[mode] = (time.perf_counter() - t) / args.steps
        rows.append((arch, times))
        print(f"  {arch}: " + ", ".join(f"{m} {t:.3f} s/step" for m, t in times.items()), flush=True)
    print(f"\nCPU, {args.threads} thread(s), batch 8 of 128 x 128, forward + backward + Adam")
    print(f"{'architecture':<28}{'float32':>9}{'f32+native':>12}{'mixed':>8}{'mixed vs float32':>18}"
          f"{'native alone':>14}")
    for arch, t in rows:
        print(f"{arch:<28}{t['float32']:>9.3f}{t['float32+native']:>12.3f}{t['mixed']:>8.3f}"
              f"{t['float32'] / t['mixed']:>17.2f}x{t['float32'] / t['float32+native']:>13.2f}x")
    ok = True
    mg = [t for a, t in rows if a == "mgssnet"]
    if mg:
        ratio = mg[0]["float32"] / mg[0]["mixed"]
        ok = ratio >= GOAL
        print(f"MGSSNet N=64/M=96 mixed vs float32 {ratio:.2f}x (goal >= {GOAL}x): "
              + ("PASS" if ok else f"MISS by {GOAL / ratio:.2f}x"))
    if args.track_steps:
        xs = list(batches(args.track_steps, seed=1))
        losses = {}
        for mixed in (False, True):
            step = trainer("mgssnet", "mixed" if mixed else "float32")
            losses[mixed] = np.array([step(x) for x in xs])
        w = max(1, args.track_steps // 6)
        print(f"\nMGSSNet training loss from the same seed and batches (mean over windows of {w} steps)")
        print(f"{'steps':>12}{'float32':>10}{'mixed':>10}{'mixed / float32':>17}")
        for a in range(0, args.track_steps, w):
            f, m = losses[False][a:a + w].mean(), losses[True][a:a + w].mean()
            print(f"{f'{a + 1}-{min(a + w, args.track_steps)}':>12}{f:>10.3f}{m:>10.3f}{m / f:>17.3f}")
        last_f, last_m = losses[False][-w:].mean(), losses[True][-w:].mean()
        tracks = abs(last_m / last_f - 1) <= 0.05
        ok &= tracks
        print(f"last window within 5 % of float32: {'PASS' if tracks else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

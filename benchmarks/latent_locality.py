"""Is a tile's latent a crop of the scene's latent? What a halo can and cannot fix (issue 26).

    .venv/bin/python benchmarks/latent_locality.py [--quality 3] [--arch mgssnet] [--scene A.tif]

A halo makes tiles join only if the analysis transform is *local*: the tile's latent computed over
the tile plus ``16 x halo`` pixels of context must approach the latent of the whole scene as the
halo grows. For one 256 x 256 tile in the middle of a 512 x 768 scene window it prints, per halo,
the mean |y_tile - y_scene| over the tile's latent (relative to mean |y_scene|), the rate of the
tile's latent coded alone (bpp, hyperprior + context model per tile, as the codec does), where
that rate goes (first latent row vs the rest), and the rate under the quality's halo prior. Then decode-side halos on the tile grid
(PSNR and seam ratio of benchmarks/seams.py). Exit 1 when the latent is not local (relative
difference above 5 % at the largest halo): seam-free coding by halo then needs other weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).parent))
from _common import data_dir  # noqa: E402
from seams import seam_ratio  # noqa: E402

import geocompress  # noqa: E402
from geocompress.scene.halo import latent_window  # noqa: E402

SCENE = "scenes/naip_m_4709963_se_14_20200831_5m.tif"


def latent_bits(m: torch.nn.Module, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Bits per latent position of ``y`` coded on its own (rounded around the predicted mean),
    and the hyper-latent's bits, with the model's float32 entropy models."""
    z = m.h_a(y)
    z_hat, z_lik = m.entropy_bottleneck(z)
    params = m.h_s(z_hat)
    y_hat = torch.round(y)
    ctx = m.context_prediction(y_hat)
    scales, means = m.entropy_parameters(torch.cat((params, ctx), 1)).chunk(2, 1)
    _, y_lik = m.gaussian_conditional(y, scales, means=means)
    return (-torch.log2(y_lik)).sum(1)[0], float((-torch.log2(z_lik)).sum())


def grid_decode(codec, a: np.ndarray, k: int) -> np.ndarray:
    """The window as a 2 x 3 grid of tiles coded alone, synthesized with ``k`` latent pixels of
    their neighbours (edge replication where there is none), as the scene decoder does."""
    R, C = a.shape[1] // 256, a.shape[2] // 256
    tiles = [a[:, 256 * i:256 * i + 256, 256 * j:256 * j + 256] for i in range(R) for j in range(C)]
    heads, lats = codec.decode_latents(codec.encode(np.stack(tiles)))
    lat = {divmod(n, C): lats[n][0] for n in range(R * C)}
    wins = [[latent_window(lat, i, j, k, (k, k, k, k))] for (i, j) in lat]
    out = np.zeros(a.shape, np.float64)
    for (i, j), p in zip(lat, codec.synthesize(heads, wins, k)):
        out[:, 256 * i:256 * i + 256, 256 * j:256 * j + 256] = p
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="mgssnet")
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--scene", type=Path, default=None)
    ap.add_argument("--halos", type=int, nargs="+", default=[0, 1, 2, 4])
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    scene = a.scene or data_dir() / SCENE
    if not scene.exists():
        print(f"{scene} not found (set GEOCOMPRESS_DATA or pass --scene)", file=sys.stderr)
        return 2
    with rasterio.open(scene) as ds:
        px = ds.read([1, 2, 3], window=Window(0, 0, 768, 512))
    codec = geocompress.load_codec(a.arch, quality=a.quality, precision="float32")
    m = codec.model.float()
    prior = geocompress.load_codec(a.arch, quality=a.quality, precision="float32", halo_prior=True)
    mp = prior.model.float() if prior.digest != codec.digest else None
    x = torch.from_numpy(px.astype(np.float32) / 255)[None]
    r0, c0 = 128, 256  # the middle tile, 64 px of context on every side at halo 4
    with torch.no_grad():
        y_scene = m.g_a(x)[..., r0 // 16:r0 // 16 + 16, c0 // 16:c0 // 16 + 16]
        ref = float(y_scene.abs().mean())
        print(f"{scene.name}, {a.arch} q{a.quality}; tile at ({r0}, {c0}); mean |y_scene| {ref:.3f}")
        print(f"{'halo':>5}{'|y-y_scene|':>13}{'relative':>10}{'bpp':>8}{'row 0 bits':>12}"
              f"{'other rows':>12}{'bpp, halo prior':>17}")
        rel = 0.0
        for k in a.halos:
            c = 16 * k
            y = m.g_a(x[..., r0 - c:r0 + 256 + c, c0 - c:c0 + 256 + c])
            if k:
                y = y[..., k:-k, k:-k]
            d = float((y - y_scene).abs().mean())
            rel = d / ref
            bits, zbits = latent_bits(m, y)
            bpp = (float(bits.sum()) + zbits) / 256 ** 2
            hp = "none shipped"
            if mp is not None:
                pb, pz = latent_bits(mp, y)
                hp = f"{(float(pb.sum()) + pz) / 256 ** 2:.4f}"
            print(f"{k:>5}{d:>13.3f}{rel:>10.1%}{bpp:>8.4f}{float(bits[0].mean()):>12.1f}"
                  f"{float(bits[1:].mean()):>12.1f}{hp:>17}")
        bits, zbits = latent_bits(m, m.g_a(x))
        inner = bits[r0 // 16:r0 // 16 + 16, c0 // 16:c0 // 16 + 16]
        print(f"the scene coded whole: {float(inner.sum()) / 256 ** 2:.4f} bpp over the same tile")
        print("\ndecode-side halo on a 2 x 3 tile grid coded alone (encoder halo 0):")
        valid = np.ones(px.shape[1:], bool)
        for k in a.halos:
            y = grid_decode(codec, px, k)
            psnr = 10 * np.log10(255 ** 2 / np.mean((px.astype(np.float64) - y) ** 2))
            print(f"  halo {k}: PSNR {psnr:.2f} dB, seam ratio {seam_ratio(px.astype(np.float64), y, valid):.3f}")
    local = rel <= 0.05
    print(f"\nlatent local at halo {a.halos[-1]}: {'yes' if local else 'no'} (relative difference "
          f"{rel:.1%}, limit 5 %)")
    return 0 if local else 1


if __name__ == "__main__":
    sys.exit(main())

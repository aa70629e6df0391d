"""Which neighbours a halo-coded tile sees, at encode and at decode (issue 26).

A halo makes tiles join by running the transforms over the tile plus its neighbours, as if the
scene were coded whole. Where the grid has no neighbour (the scene's edge), coding the scene whole
would meet that edge with the transforms' own zero padding, so the window simply ends there
("truncate"): edge-replicated context instead costs PSNR on the outer tiles (measured in
``catalogs/halo.md`` section 3, ``benchmarks/latent_locality.py``). Stores written before this
rule replicated at the edge ("replicate") and keep decoding that way.

At decode, a neighbour inside the grid with no latent (a dropped nodata or constant tile) is
left out like the scene's edge: there is nothing on its side to join, and the synthesis then meets
it with the padding it was trained with at edges. A missing corner of the window is filled by
edge replication of the window itself: it is two latent pixels square and outside the tile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..geo.grid import TileGrid

if TYPE_CHECKING:  # type names only: importing this module imports no torch (issue 38)
    import torch

    from ..codec.tile_codec import Sides

EDGES = ("truncate", "replicate")


def grid_sides(grid: TileGrid, row: int, col: int, halo: int) -> Sides:
    """Context the encoder reads for tile (row, col): ``halo`` where the grid has a neighbour.

    Args:
        grid: the tile grid.
        row: the tile's row.
        col: its column.
        halo: latent pixels of context.

    Returns:
        ``(top, bottom, left, right)`` in latent pixels.
    """
    k = int(halo)
    return (k if row > 0 else 0, k if row < grid.n_rows - 1 else 0,
            k if col > 0 else 0, k if col < grid.n_cols - 1 else 0)


def latent_sides(has: dict[tuple[int, int], bool], row: int, col: int, halo: int) -> Sides:
    """Context the decoder gives tile (row, col): ``halo`` where the neighbour has a latent.

    Args:
        has: for each neighbouring cell, whether it holds a latent of the tile's shape.
        row: the tile's row.
        col: its column.
        halo: latent pixels of context.

    Returns:
        ``(top, bottom, left, right)`` in latent pixels.
    """
    k = int(halo)
    return (k if has.get((row - 1, col)) else 0, k if has.get((row + 1, col)) else 0,
            k if has.get((row, col - 1)) else 0, k if has.get((row, col + 1)) else 0)


def store_edges(config: dict) -> str:
    """A store's edge rule: written in its codec config since it exists, else the old one.

    Args:
        config: the store's codec config.

    Returns:
        ``"truncate"`` or ``"replicate"``.

    Raises:
        ValueError: a rule this version does not know (a store from a newer geocompress).
    """
    edges = config.get("halo_edges", "replicate")
    if edges not in EDGES:
        raise ValueError(f"store has halo_edges={edges!r}; this version knows {EDGES}")
    return edges


DEFAULT_HALO = 2  # latent pixels: beyond 2 the tile's latent is the scene's (catalogs/halo.md, section 1)


def resolve_halo(halo: int | str, arch: str, quality: int | None, pretrained: bool,
                 checkpoint: str | None, stored: int | None = None) -> int:
    """The halo a compress run codes with.

    ``"auto"``: a store being resumed keeps its halo; otherwise :data:`DEFAULT_HALO` where the
    shipped weights have a halo prior for the quality, or a checkpoint one for its very weights
    beside it (without one a halo costs far more bits: catalogs/halo.md, section 2), else 0.

    Args:
        halo: latent pixels 0..255, or ``"auto"``.
        arch: the architecture.
        quality: the quality asked for (None: the shipped default).
        pretrained: shipped weights (False: fixed-seed, no prior).
        checkpoint: a weights file (its prior: ``<stem>-halo.pt`` beside it).
        stored: the halo of the store being resumed, if any.

    Returns:
        Latent pixels of context (0: tiles coded alone).

    Raises:
        ValueError: a halo that is neither ``"auto"`` nor 0..255.
    """
    if halo != "auto":
        try:
            k = int(halo)
        except (TypeError, ValueError):
            raise ValueError(f"halo must be 0..255 latent pixels or 'auto', got {halo!r}") from None
        if not 0 <= k <= 255:
            raise ValueError(f"halo must be 0..255 latent pixels or 'auto', got {halo!r}")
        return k
    if stored is not None:
        return int(stored)
    from ..codec.errors import WeightsError
    from ..codec.weights import checkpoint_halo_prior, shipped_halo_prior, shipped_path

    if checkpoint is not None:
        try:
            return DEFAULT_HALO if checkpoint_halo_prior(checkpoint) is not None else 0
        except WeightsError:
            return 0  # load_codec names the problem
    if not pretrained:
        return 0

    try:
        q = shipped_path(arch, quality)[1]
    except WeightsError:
        return 0  # load_codec names the problem
    return DEFAULT_HALO if shipped_halo_prior(arch, q) is not None else 0


def latent_window(latents: dict[tuple[int, int], "torch.Tensor | np.ndarray"], row: int, col: int,
                  halo: int, sides: Sides) -> "torch.Tensor | np.ndarray":
    """Tile (row, col)'s latent (``M x h x w``) framed by ``halo`` latent pixels of each
    neighbour in ``latents`` (same shape only), cut to ``sides``; what no neighbour covers is the
    edge replication of the window.

    Args:
        latents: latents by grid cell.
        row: the tile's row.
        col: its column.
        halo: latent pixels of context.
        sides: the context kept on each side (:func:`latent_sides`).

    Returns:
        The window the synthesis decodes.
    """
    own = latents[(row, col)]
    k, (lh, lw) = int(halo), own.shape[-2:]
    if isinstance(own, np.ndarray):  # the NumPy decoder's latents
        win = np.pad(own, ((0, 0), (k, k), (k, k)), mode="edge")
    else:
        import torch.nn.functional as F

        win = F.pad(own[None], (k, k, k, k), mode="replicate")[0].clone()
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            nb = latents.get((row + di, col + dj))
            if (di, dj) == (0, 0) or nb is None or nb.shape != own.shape or not k:
                continue
            dst_r = {-1: slice(0, k), 0: slice(k, k + lh), 1: slice(k + lh, 2 * k + lh)}[di]
            dst_c = {-1: slice(0, k), 0: slice(k, k + lw), 1: slice(k + lw, 2 * k + lw)}[dj]
            src_r = {-1: slice(lh - k, lh), 0: slice(0, lh), 1: slice(0, k)}[di]
            src_c = {-1: slice(lw - k, lw), 0: slice(0, lw), 1: slice(0, k)}[dj]
            win[:, dst_r, dst_c] = nb[:, src_r, src_c]
    top, bottom, left, right = sides  # the window ends where there is nothing to join
    win = win[:, k - top: win.shape[1] - (k - bottom), k - left: win.shape[2] - (k - right)]
    return np.ascontiguousarray(win) if isinstance(win, np.ndarray) else win.contiguous()

"""The tile grid of a scene: which pixel window each stored tile covers.

:class:`TileGrid` is an immutable value (in the spirit of odc-geo's
``GeoBox`` + ``GeoboxTiles``): the scene's pixel grid (width, height, affine
transform, CRS) plus a tiling (tile size, stride). Tile ``(row, col)`` starts at
pixel ``(row * stride, col * stride)`` and is ``tile x tile`` pixels; tiles at
the right/bottom edge extend past the scene and are padded when read.
``stride < tile`` gives overlapping tiles (the API allows it; the default is
``stride == tile``, a plain partition).

All window arithmetic uses ``rasterio.windows.Window`` (col_off, row_off,
width, height); CRS work goes through pyproj (see :mod:`.reproject`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

from shapely import affinity
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from shapely.geometry import Polygon, box

from geocompress.geo.reproject import Bbox, bbox_polygon, to_rasterio_crs, transform_bbox


def _n_tiles(size: int, tile: int, stride: int) -> int:
    """Number of tiles of ``tile`` px at ``stride`` needed to cover ``size`` px."""
    return 1 + max(0, math.ceil((size - tile) / stride))


PIXEL_EPS = 1e-6


def _snap(v: float) -> float:
    """``v`` rounded to the nearest integer when within ``PIXEL_EPS`` pixels of it."""
    r = round(v)
    return float(r) if abs(v - r) < PIXEL_EPS else v


@dataclass(frozen=True)
class TileGrid:
    """Scene pixel grid + tiling. Immutable, hashable, JSON round-trippable."""

    width: int
    height: int
    transform: Affine
    crs: CRS | None
    tile: int = 256
    stride: int | None = field(default=None)

    def __post_init__(self) -> None:
        # Normalise so that equal grids compare equal (stride None == tile).
        stride = self.tile if self.stride is None else int(self.stride)
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "tile", int(self.tile))
        if not isinstance(self.transform, Affine):
            object.__setattr__(self, "transform", Affine(*tuple(self.transform)[:6]))
        if self.crs is not None and not isinstance(self.crs, CRS):
            object.__setattr__(self, "crs", to_rasterio_crs(self.crs))
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"grid must be non-empty, got {self.width}x{self.height}")
        if self.tile <= 0:
            raise ValueError(f"tile must be positive, got {self.tile}")
        if not 0 < stride <= self.tile:
            raise ValueError(f"stride must be in 1..tile ({self.tile}), got {stride}")
        if self.transform.determinant == 0:
            raise ValueError(f"transform is not invertible: {self.transform!r}")

    def __hash__(self) -> int:
        # rasterio CRS hashes its WKT text, so equal CRSs can hash differently:
        # leave the CRS out (equal grids must hash equal).
        return hash((self.width, self.height, tuple(self.transform), self.tile, self.stride))

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_dataset(cls, ds: Any, tile: int = 256, stride: int | None = None) -> "TileGrid":
        """Grid of anything with width/height/transform/crs (rasterio dataset, SceneInfo).

        Args:
            ds: the raster.
            tile: tile size in pixels.
            stride: step between tiles (default ``tile``: no overlap).

        Returns:
            The grid.

        Raises:
            ValueError: an empty raster, a non-invertible transform or an impossible tile / stride.
        """
        return cls(ds.width, ds.height, ds.transform, ds.crs, tile=tile, stride=stride)

    # -- shape ----------------------------------------------------------------------
    @property
    def step(self) -> int:
        """The stride as a plain int (``stride`` is normalised, this is for typing)."""
        return int(self.stride)  # type: ignore[arg-type]

    @property
    def n_rows(self) -> int:
        """Tile rows: enough to cover the scene (the last tile may extend past the bottom edge)."""
        return _n_tiles(self.height, self.tile, self.step)

    @property
    def n_cols(self) -> int:
        """Tile columns: enough to cover the scene (the last may extend past the right edge)."""
        return _n_tiles(self.width, self.tile, self.step)

    @property
    def shape(self) -> tuple[int, int]:
        """(n_rows, n_cols) of the tile grid."""
        return self.n_rows, self.n_cols

    def indices(self) -> Iterator[tuple[int, int]]:
        """All (row, col) tile indices, row-major.

        Yields:
            ``(row, col)``.
        """
        for r in range(self.n_rows):
            for c in range(self.n_cols):
                yield r, c

    # -- windows & transforms -------------------------------------------------------
    def _check(self, row: int, col: int) -> None:
        if not (0 <= row < self.n_rows and 0 <= col < self.n_cols):
            raise IndexError(f"tile ({row}, {col}) outside grid {self.shape}")

    def window(self, row: int, col: int) -> Window:
        """Full tile window (may extend past the right/bottom scene edge).

        Args:
            row: tile row.
            col: tile column.

        Returns:
            The window in scene pixels.

        Raises:
            IndexError: the tile is outside the grid.
        """
        self._check(row, col)
        return Window(col * self.step, row * self.step, self.tile, self.tile)

    def valid_window(self, row: int, col: int) -> Window:
        """Tile window clipped to the scene (what actually exists on disk).

        Args:
            row: tile row.
            col: tile column.

        Returns:
            The window in scene pixels.

        Raises:
            IndexError: the tile is outside the grid.
        """
        w = self.window(row, col)
        c0, r0 = int(w.col_off), int(w.row_off)
        return Window(c0, r0, min(self.tile, self.width - c0), min(self.tile, self.height - r0))

    def tile_transform(self, row: int, col: int) -> Affine:
        """Affine transform of the tile's own pixel grid (origin at its top-left).

        Args:
            row: tile row.
            col: tile column.

        Returns:
            The transform, in the scene's CRS.

        Raises:
            IndexError: the tile is outside the grid.
        """
        self._check(row, col)
        return self.transform @ Affine.translation(col * self.step, row * self.step)

    @property
    def tile_index_transform(self) -> Affine:
        """Transform of the tile-index raster (one cell per tile, spaced by stride).

        Used to georeference per-tile arrays (e.g. the store's ``status``).
        """
        return self.transform @ Affine.scale(self.step)

    # -- geometry -------------------------------------------------------------------
    def pixel_polygon(self) -> Polygon:
        """The scene as a polygon in pixel space.

        Returns:
            ``box(0, 0, width, height)``.
        """
        return box(0, 0, self.width, self.height)

    def footprint(self) -> Polygon:
        """The scene outline in its own CRS (exact for rotated transforms).

        Returns:
            The outline polygon.
        """
        a, b, c, d, e, f = self.transform[:6]
        return affinity.affine_transform(self.pixel_polygon(), [a, b, d, e, c, f])

    @property
    def bounds(self) -> Bbox:
        """(minx, miny, maxx, maxy) of the scene in the scene CRS."""
        return tuple(float(v) for v in self.footprint().bounds)  # type: ignore[return-value]

    # -- queries --------------------------------------------------------------------
    def tiles_in_window(self, window: Window) -> tuple[slice, slice]:
        """Row and column slices of the tiles intersecting a pixel window.

        The slices may be empty when the window lies outside the scene.

        Args:
            window: a window in scene pixels.

        Returns:
            ``(rows, cols)`` slices of tile indices.
        """
        r0, r1 = window.row_off, window.row_off + window.height
        c0, c1 = window.col_off, window.col_off + window.width
        return self._axis_slice(r0, r1, self.n_rows), self._axis_slice(c0, c1, self.n_cols)

    def _axis_slice(self, lo: float, hi: float, n: int) -> slice:
        # tile i covers [i*stride, i*stride + tile): intersects [lo, hi) iff
        # i*stride < hi and i*stride + tile > lo.
        first = max(0, math.floor((lo - self.tile) / self.step) + 1)
        stop = min(n, math.ceil(hi / self.step))
        return slice(first, max(first, stop))

    def bbox_to_window(self, bbox: Bbox, bbox_crs: Any = None) -> Window:
        """Pixel window covering ``bbox`` (clipped to the scene, rounded outward).

        ``bbox`` is (minx, miny, maxx, maxy) in ``bbox_crs`` (default: scene CRS).
        A bbox in another CRS is first cut to the scene's bounds there (so a bbox holding the
        whole scene, even the whole world, gives the whole scene), then reprojected with
        ``rasterio.warp.transform_bounds`` (densified edges), then mapped to pixel space through
        the inverse transform -- correct for rotated transforms.
        Raises ``ValueError`` if the bbox does not intersect the scene.

        Args:
            bbox: ``(minx, miny, maxx, maxy)``.
            bbox_crs: its CRS (anything :func:`~geocompress.geo.reproject.to_rasterio_crs` takes);
                None for the scene's CRS.

        Returns:
            The pixel window.

        Raises:
            ValueError: an invalid bbox, one that misses the scene, or a bbox in a CRS while the grid
                has none.
        """
        poly = bbox_polygon(bbox)
        if bbox_crs is not None:
            src = to_rasterio_crs(bbox_crs)
            if self.crs is None:
                raise ValueError("grid has no CRS; give the bbox in pixel-grid coordinates (bbox_crs=None)")
            if src != self.crs:
                clipped = self._clip_to_scene(poly, src)
                if clipped is None:
                    raise self._outside(bbox, bbox_crs)
                poly = transform_bbox(clipped, src, self.crs)
        inv = ~self.transform
        pix = affinity.affine_transform(poly, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])
        hit = pix.intersection(self.pixel_polygon())
        if hit.is_empty or hit.area <= 0:
            raise self._outside(bbox, bbox_crs)
        # a bbox on pixel edges maps to integers up to float error (420.0000000001): snap those
        # first, as GDAL's -projwin does, or floor / ceil would add a row or column
        minx, miny, maxx, maxy = (_snap(v) for v in hit.bounds)
        c0, r0 = max(0, math.floor(minx)), max(0, math.floor(miny))
        c1, r1 = min(self.width, math.ceil(maxx)), min(self.height, math.ceil(maxy))
        return Window(c0, r0, c1 - c0, r1 - r0)

    def _outside(self, bbox: Bbox, bbox_crs: Any) -> ValueError:
        """The error for a bbox that does not touch the scene (says where the scene is)."""
        return ValueError(f"bbox {tuple(bbox)!r} (crs {bbox_crs or self.crs}) does not intersect "
                          f"the scene (scene bounds {self.bounds!r} in {self.crs})")

    def _clip_to_scene(self, poly: Polygon, src: CRS) -> Bbox | None:
        """The part of a bbox polygon in ``src`` that can touch the scene: the bbox cut to the
        scene's bounds reprojected into ``src`` (1 % wider each side, so densified edges that
        bend between samples lose no pixel), or None when they do not overlap.

        Why: a bbox much larger than the scene (the whole world, -180 -90 180 90) has no
        meaningful bounds in a projected scene CRS (UTM diverges far from its zone), so it must
        be cut to the scene where it is given before it is reprojected. When the scene's bounds
        cannot be expressed in ``src`` at all, the bbox is returned unchanged."""
        try:
            scene = transform_bbox(self.bounds, self.crs, src)
        except ValueError:  # the scene does not exist in src: nothing to cut it to
            return tuple(float(v) for v in poly.bounds)  # type: ignore[return-value]
        minx, miny, maxx, maxy = scene.bounds
        mx, my = 0.01 * (maxx - minx), 0.01 * (maxy - miny)
        hit = poly.intersection(box(minx - mx, miny - my, maxx + mx, maxy + my))
        if hit.is_empty or hit.area <= 0:
            return None
        return tuple(float(v) for v in hit.bounds)  # type: ignore[return-value]

    def tiles_in_bbox(self, bbox: Bbox, bbox_crs: Any = None) -> tuple[slice, slice]:
        """Row/col slices of tiles intersecting ``bbox`` (see :meth:`bbox_to_window`).

        Args:
            bbox: ``(minx, miny, maxx, maxy)``.
            bbox_crs: its CRS; None for the scene's.

        Returns:
            ``(rows, cols)`` slices of tile indices.

        Raises:
            ValueError: see :meth:`bbox_to_window`.
        """
        return self.tiles_in_window(self.bbox_to_window(bbox, bbox_crs))

    # -- serialisation --------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-safe dict. ``transform`` is in **affine order** [a, b, c, d, e, f]
        (x = a*col + b*row + c, y = d*col + e*row + f; NOT GDAL order);
        ``crs`` is WKT2 (or None).

        Returns:
            width, height, transform, crs, tile and stride.
        """
        return {
            "width": self.width,
            "height": self.height,
            "transform": [float(v) for v in self.transform[:6]],
            "crs": None if self.crs is None else self.crs.to_wkt(version="WKT2_2019"),
            "tile": self.tile,
            "stride": self.step,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "TileGrid":
        """Inverse of :meth:`to_dict`.

        Args:
            d: a dict from :meth:`to_dict` (e.g. a store's ``grid`` attribute).

        Returns:
            The grid.
        """
        crs = None if d.get("crs") is None else CRS.from_wkt(d["crs"])
        return cls(
            int(d["width"]), int(d["height"]), Affine(*d["transform"][:6]), crs,
            tile=int(d["tile"]), stride=d.get("stride"),
        )

    def in_scene_pixels(self, row: int, col: int) -> int:
        """Pixels of tile (row, col) inside the scene (for edge-aware filtering).

        Args:
            row: tile row.
            col: tile column.

        Returns:
            The count.
        """
        w = self.valid_window(row, col)
        return int(w.width * w.height)


__all__ = ["TileGrid", "Bbox"]

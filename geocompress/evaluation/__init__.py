"""Evaluation: the paper's experiments on any image set.

* :mod:`.classical`: classical codec anchors; :mod:`.bd`: Bjøntegaard deltas.
* :mod:`.images`: image sets (folder, tile-dataset Zarr split, GeoTIFF scenes).
* :mod:`.rd`: per-image rate-distortion of classical and learned codecs, resumable caches.
* :mod:`.figures`, :mod:`.classifier`: RD curves, visual comparison, confusion matrices; the
  downstream scene classifier.
* :mod:`.report`: ``reports/<name>/`` from a :class:`~.report.ReportConfig`;
  :mod:`.commands`: ``geocompress evaluate``.

Submodules are imported on use; this package imports nothing heavy (no torch)."""

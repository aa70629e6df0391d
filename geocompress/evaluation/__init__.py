"""Evaluation helpers: classical codec anchors (:mod:`.classical`) and Bjøntegaard deltas (:mod:`.bd`).

Submodules are imported on use; this package imports nothing heavy (no torch)."""

"""Store errors: all are ``StoreError`` (a ``ValueError``) with a clear message."""

from __future__ import annotations


class StoreError(ValueError):
    """The path is not a usable geocompress store (missing, foreign, bad version)."""


class StoreVersionError(StoreError):
    """The store was written in another on-disk format version."""


class StoreMismatchError(StoreError):
    """An existing store was made from another source or codec setting."""


class StoreIntegrityError(StoreError):
    """Stored bookkeeping (attributes, status, constants, masks) no longer matches its checksums."""

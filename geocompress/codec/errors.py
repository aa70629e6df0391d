"""Errors raised when a byte string cannot be decoded: each names what is wrong, none is silent."""


class CodecError(ValueError):
    """Base class: the string or the codec cannot produce the original tile."""


class TruncatedStreamError(CodecError):
    """The string ends before the lengths in its header say it should."""


class CorruptStreamError(CodecError):
    """The checksum does not match: bytes changed after encoding."""


class ForeignStreamError(CodecError):
    """Not a geocompress tile string at all (wrong magic)."""


class UnsupportedVersionError(CodecError):
    """Written by a format version this release cannot read."""


class WeightsMismatchError(CodecError):
    """Encoded by other weights (architecture, digest) than the codec decoding it."""


class WeightsError(RuntimeError):
    """Shipped weights missing, unknown, or damaged (digest check failed)."""

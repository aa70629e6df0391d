"""Which codec to build: one value for the options that always travel together.

A codec is named by its architecture, its rate (a shipped quality or a variable-rate level), where
its weights come from (shipped, a checkpoint file, or fixed-seed for pipeline tests) and how it
runs (precision, batch, encoder-side refinement, device). :func:`~geocompress.codec.load_codec`,
the scene pipeline and the CLI pass this one value instead of a dozen keywords (as CompressAI's
zoo names a model by a few arguments plus its configuration tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from ..shipped import DEFAULT_ARCH


@dataclass(frozen=True)
class CodecChoice:
    """The codec a caller asks for.

    Args:
        arch: registry architecture (``geocompress.models``), e.g. ``"mgssnet"`` or
            ``"mgssnet-vr"``.
        quality: a shipped quality (1..Q), or a variable-rate model's level on its continuous
            scale; ``None``: the shipped default (a variable-rate model's default level, a
            ladder's middle quality) or the checkpoint's.
        checkpoint: a weights file to use instead of the shipped weights.
        pretrained: ``False`` builds the architecture with fixed-seed weights from ``config``
            (testing the pipeline only: such a codec compresses nothing well).
        precision: transforms' precision, ``"auto"`` (bfloat16 where the CPU has it), or one of
            ``bfloat16``, ``float16``, ``float32``, ``float64`` (the exact mode).
        batch_size: tiles per model batch.
        refine_steps: encoder-side latent refinement steps (0: off); decoded by any geocompress.
        device: ``"cpu"`` or a torch device such as ``"cuda"``.
        config: the architecture's configuration (``N``, ``M``, ...) for ``pretrained=False``.

    Examples:
        >>> from geocompress.codec import CodecChoice
        >>> CodecChoice(quality=2).replace(precision="float64").precision
        'float64'
        >>> CodecChoice.of(arch="mgssnet", pretrained=False, N=32).config["N"]
        32
    """

    arch: str = DEFAULT_ARCH
    quality: float | None = None
    checkpoint: str | None = None
    pretrained: bool = True
    precision: str = "auto"
    batch_size: int = 16
    refine_steps: int = 0
    device: str = "cpu"
    config: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def of(cls, **options: Any) -> "CodecChoice":
        """A choice from keyword options: the fields by name, anything else into ``config``
        (``CodecChoice.of(pretrained=False, N=32, M=48)``), so that callers can keep passing one
        flat set of keywords.

        Args:
            **options: field values and architecture configuration entries.

        Returns:
            The choice.
        """
        names = {f.name for f in fields(cls)}
        config = dict(options.pop("config", None) or {})
        config.update({k: options.pop(k) for k in list(options) if k not in names})
        return cls(**options, config=config)

    def replace(self, **changes: Any) -> "CodecChoice":
        """This choice with some fields changed (the dataclass is frozen).

        Args:
            **changes: field values.

        Returns:
            A new choice.
        """
        return replace(self, **changes)

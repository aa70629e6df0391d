"""Checkpoints: what a checkpoint holds, its digest, and the shipped weights looked up by quality.

A checkpoint is a dict ``{"arch", "config", "state_dict", "meta"}``; ``config`` rebuilds the model
through :func:`geocompress.models.build`. The state dict includes the entropy models' CDF tables,
so a decoder never recomputes them (see :mod:`geocompress.codec.entropy`). The digest is SHA-256
over the state dict's tensors (sorted names, raw bytes of each tensor) and identifies the weights in
every tile string and store.

fp16 is for the learned parameters only. Buffers are constants of the architecture (likelihood
bounds of 1e-9, GDN pedestals of 2^-36, a scale bound of 0.11): fp16 turns the first two into 0
and moves the last, so a buffer is stored in fp16 only where that is exact. Checkpoints written
before that rule (and training states warm-started from them) hold those zeros;
:func:`restore_constants` gives the architecture's values back when they load.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_save
from ..models import build
from ..shipped import is_variable_rate_entry, shipped_index  # noqa: F401 - re-exported
from .compressai_adapter import resize_cdf_buffers
from .decoding import check_level
from .errors import WeightsError

FIXED_SEED = 20240621  # untrained (pretrained=False) models are this seed's initialisation


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: the weights' identity
    that tile headers, stores and the shipped index record, independent of how the file was saved.

    Args:
        state_dict: the tensors as loaded (what decodes), not as stored.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def untrained(arch: str, **config: Any) -> torch.nn.Module:
    """The architecture with fixed-seed weights and CDF tables, identical on every machine that
    runs the same torch build.

    Args:
        arch: a registry name.
        **config: the architecture's configuration.

    Returns:
        The model, its CDF tables built; the global RNG state is left as it was.
    """
    devnull_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(FIXED_SEED)
        model = build(arch, **config)
    finally:
        torch.random.set_rng_state(devnull_state)
    model.update(force=True)
    return model


def save_checkpoint(model: torch.nn.Module, path: str | Path, meta: dict | None = None,
                    half: bool = True) -> str:
    """Write an inference checkpoint (fp16 weights by default; CDF tables stay int32) and return
    the digest of the weights as they will be loaded.

    Args:
        model: the model (its CDF tables are rebuilt first).
        path: the file, written atomically.
        meta: facts kept beside the weights (training, catalog entries).
        half: store floating weights in fp16 where that is exact enough.

    Returns:
        :func:`state_digest` of the weights as :func:`load_checkpoint` will load them.
    """
    model.update(force=True)
    sd = _stored_state(model, half)
    atomic_save({"arch": model.arch, "config": dict(model.config), "state_dict": sd,
                 "meta": dict(meta or {})}, path)
    return state_digest(_loaded_state(sd))


def _stored_state(model: torch.nn.Module, half: bool = True,
                  parts: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """The state dict as files hold it (fp16 where :func:`_half_ok`), optionally only ``parts``."""
    params = {name for name, _ in model.named_parameters()}
    return {k: (v.half() if half and _half_ok(k in params, v) else v).cpu()
            for k, v in model.state_dict().items() if parts is None or k.startswith(parts)}


@contextmanager
def _damaged(path: Path, what: str, noun: str):
    """Any failure reading ``path`` (other than a :class:`WeightsError`) as a damaged file."""
    try:
        yield
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure here means a damaged file
        raise WeightsError(f"{what} {path} is damaged or not a geocompress {noun}: "
                           f"{type(e).__name__}: {e}") from e


def _half_ok(is_param: bool, v: torch.Tensor) -> bool:
    """Parameters go to fp16 (the price the checkpoint size is worth); buffers only if exact."""
    if not v.is_floating_point():
        return False
    return is_param or bool(torch.equal(v.half().to(v.dtype), v))


def restore_constants(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``sd`` with every floating buffer that fp16 flushed to zero given ``model``'s own value back.

    ``model`` must be freshly built: its buffers are the architecture's constants. Only zeros are
    restored (a bound of 0 is no bound at all); constants fp16 merely rounded (the 0.11 scale bound,
    the scale table the CDF tables are indexed by) stay as the file has them, so a file decodes as
    it was measured, and identically on every machine.

    Args:
        model: a freshly built model of the checkpoint's architecture.
        sd: the loaded state_dict.

    Returns:
        A copy of ``sd`` with the flushed constants restored.
    """
    params = {name for name, _ in model.named_parameters()}
    out = dict(sd)
    for name, ref in model.state_dict().items():
        got = sd.get(name)
        if (name in params or got is None or not ref.is_floating_point()
                or not got.is_floating_point() or got.shape != ref.shape):
            continue
        ref = ref.detach().cpu().float()
        if ref.any() and not ref.half().any() and not got.any():
            out[name] = ref
    return out


def _loaded_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Digest what the model holds after loading (fp16 weights widened to fp32).
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def load_checkpoint(path: str | Path, expected_digest: str | None = None) -> torch.nn.Module:
    """Load an inference checkpoint: its architecture built from its config, its weights and CDF
    tables loaded as stored (never recomputed: a decoder needs the tables the encoder used).

    Args:
        path: the checkpoint.
        expected_digest: the digest a catalog or store records; checked when given.

    Returns:
        The model (in train mode, as built), with the file's ``meta`` as ``model.meta``.

    Raises:
        WeightsError: the file is missing, damaged, or its digest is not the expected one.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    with _damaged(path, "checkpoint", "checkpoint"):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        sd = _loaded_state(ckpt["state_dict"])
        model = build(ckpt["arch"], **ckpt["config"])
        model.load_state_dict(restore_constants(model, sd))
    if expected_digest is not None:
        got = state_digest(sd)
        if got != expected_digest:
            raise WeightsError(f"checkpoint {path} digest {got[:16]} does not match the catalog's "
                               f"{expected_digest[:16]}: the file is damaged or was replaced")
    model.meta = ckpt.get("meta", {})  # type: ignore[attr-defined]
    return model


def shipped_path(arch: str, quality: float | None) -> tuple[Path, float, str]:
    """Path, quality and digest of shipped weights; a clear error when there are none.

    A fixed-rate architecture ships one file per quality (``index[arch]["qualities"]``); a
    variable-rate one (``index[arch]["levels"]``) one file for every level of its continuous
    scale, whose quality is a level (:func:`is_variable_rate_entry`).

    Args:
        arch: a registry name.
        quality: a shipped quality (a level of a variable-rate model), or None for the
            architecture's default.

    Returns:
        ``(path, quality, digest)``: the quality an int for fixed-rate weights, a float level
        for variable-rate ones.

    Raises:
        WeightsError: nothing ships for ``arch``, or not at ``quality``.
        ValueError: a level outside a variable-rate model's scale, or not a number.
    """
    index = shipped_index().get(arch)
    if not index:
        raise WeightsError(
            f"no shipped weights for {arch!r} in this release; train some with `geocompress "
            f"train` and pass the checkpoint, or use pretrained=False for the untrained "
            f"architecture")
    if is_variable_rate_entry(index):
        level = check_level(index["default"] if quality is None else quality, int(index["levels"]))
        return _weights_file(index["file"]), level, index["digest"]
    qualities = sorted(int(q) for q in index["qualities"])
    if quality is None:
        quality = int(index.get("default", qualities[len(qualities) // 2]))
    if isinstance(quality, bool) or quality not in qualities:
        raise WeightsError(f"{arch}: no shipped quality {quality}; available: {qualities}")
    entry = index["qualities"][str(int(quality))]
    return _weights_file(entry["file"]), int(quality), entry["digest"]


# -- halo priors (issue 26): a shipped quality's entropy half refitted for halo-coded tiles ------
def save_prior_delta(model: torch.nn.Module, path: str | Path, base_digest: str,
                     parts: tuple[str, ...], meta: dict | None = None) -> None:
    """Only the tensors under ``parts`` (fp16 where exact, as :func:`save_checkpoint`) plus the
    digest of the checkpoint they replace them in: a few MB beside the 10 MB base. The combined
    digest is what :func:`load_with_delta` then loads.

    Args:
        model: the base model with refitted prior parts.
        path: the delta file, written atomically.
        base_digest: the base checkpoint's digest.
        parts: state_dict prefixes of the refitted modules.
        meta: facts kept beside the tensors.
    """
    model.update(force=True)
    atomic_save({"arch": model.arch, "base_digest": base_digest, "parts": list(parts),
                 "state_dict": _stored_state(model, parts=parts), "meta": dict(meta or {})}, path)


def load_with_delta(base: str | Path, base_digest: str, delta: str | Path,
                    expected_digest: str | None = None) -> torch.nn.Module:
    """The base checkpoint with a prior delta's tensors in place (digests of both checked).

    Args:
        base: the base checkpoint.
        base_digest: its digest.
        delta: the prior file (:func:`save_prior_delta`).
        expected_digest: the combined digest; checked when given.

    Returns:
        The combined model; ``meta`` is the base's updated with the delta's.

    Raises:
        WeightsError: a file is missing or damaged, the delta refits other weights or holds tensors
            the model lacks, or the combined digest is not the expected one.
    """
    # the combined digest covers every tensor the model ends up with: the base's own is checked
    # only without one, or to name the damaged file when the combined one does not match
    model = load_checkpoint(base, expected_digest=None if expected_digest else base_digest)
    delta = Path(delta)
    if not delta.is_file():
        raise WeightsError(f"prior file {delta} does not exist")
    with _damaged(delta, "prior file", "prior"):
        d = torch.load(delta, map_location="cpu", weights_only=True)
        sd = _loaded_state(d["state_dict"])
        if d["base_digest"] != base_digest or d["arch"] != model.arch:
            raise WeightsError(f"{delta} refits {d['arch']} weights {d['base_digest'][:16]}, not "
                               f"{model.arch} {base_digest[:16]}")
        # a refitted density's CDF tables have another length
        resize_cdf_buffers(model.entropy_bottleneck, sd, "entropy_bottleneck.")
        state = model.state_dict()
        unknown = sorted(set(sd) - set(state))
        if unknown:
            raise WeightsError(f"{delta} holds tensors the model lacks: {unknown[:3]}")
        state.update(sd)
        model.load_state_dict(state)
    if expected_digest is not None:
        got = state_digest(model.state_dict())
        if got != expected_digest:
            load_checkpoint(base, expected_digest=base_digest)  # raises if the base is damaged
            raise WeightsError(f"weights from {delta} have digest {got[:16]}, the catalog says "
                               f"{expected_digest[:16]}: the file is damaged or was replaced")
    model.meta = {**getattr(model, "meta", {}), **d.get("meta", {})}  # type: ignore[attr-defined]
    return model


def _quality_entry(arch: str, quality: float) -> dict:
    """The index entry of ``arch`` at ``quality``: a variable-rate entry serves every level."""
    index = shipped_index().get(arch, {})
    if is_variable_rate_entry(index):
        return index
    if isinstance(quality, bool) or float(quality) != int(quality):
        return {}
    return index.get("qualities", {}).get(str(int(quality)), {})


def _weights_file(name: str) -> Path:
    return Path(str(resources.files("geocompress") / "weights" / name))


def shipped_halo_prior(arch: str, quality: float) -> tuple[Path, str] | None:
    """Path and combined digest of the halo prior shipped for ``arch`` at ``quality``, if any.

    Args:
        arch: a registry name.
        quality: a shipped quality.

    Returns:
        ``(path, digest)``, or None where no prior ships.
    """
    entry = _quality_entry(arch, quality).get("halo_prior")
    if not entry:
        return None
    return _weights_file(entry["file"]), entry["digest"]


def _file_digest(path: Path) -> str:
    """The digest of a checkpoint's weights, loaded once per file version in a process (a
    compress run asks for it up to three times: the halo, the codec, its prior)."""
    st = path.stat()
    return _digest_of(str(path.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _digest_of(path: str, mtime_ns: int, size: int) -> str:
    return state_digest(load_checkpoint(path).state_dict())


def checkpoint_halo_prior(path: str | Path) -> tuple[Path, str] | None:
    """The halo prior of a weights file that is not shipped: ``<stem>-halo.pt`` beside it (a
    variable-rate run's ``wip/mgssnet-vr.pt`` has ``wip/mgssnet-vr-halo.pt``), where one is
    there and refits these very weights (a prior left from earlier weights does not count).

    Args:
        path: the checkpoint.

    Returns:
        ``(prior path, the checkpoint's digest)``, or None.

    Raises:
        WeightsError: the checkpoint is missing or damaged.
    """
    prior = Path(path).with_name(f"{Path(path).stem}-halo.pt")
    if not prior.is_file():
        return None
    base_digest = _file_digest(Path(path))
    try:
        with _damaged(prior, "prior file", "prior"):
            refits = torch.load(prior, map_location="cpu", weights_only=True)["base_digest"]
    except WeightsError as e:  # coding goes on without it; a store written with it cannot decode
        warnings.warn(f"{e}: ignored (refit it: pipelines/fit_halo_priors.py --checkpoint {path})",
                      stacklevel=2)
        return None
    return (prior, base_digest) if refits == base_digest else None


def drop_stale_halo_prior(path: str | Path) -> Path | None:
    """Remove the halo prior beside a checkpoint whose weights were just replaced (it refits the
    old ones: ``--halo auto`` would no longer use it, and no store of the new weights needs it).

    Args:
        path: the checkpoint, already replaced.

    Returns:
        The prior file removed, or None (none there, or it refits these weights).
    """
    prior = Path(path).with_name(f"{Path(path).stem}-halo.pt")
    if not prior.exists() or checkpoint_halo_prior(path) is not None:
        return None
    prior.unlink()
    return prior


def keep_replaced_halo_prior(path: str | Path) -> Path | None:
    """Before a checkpoint's halo prior is refitted: the prior there now, where it refits these
    very weights, kept beside them as ``<stem>-halo-<its digest[:12]>.pt``, so that the stores
    written with it keep decoding (:func:`load_checkpoint_for` finds it by their digest).

    Args:
        path: the checkpoint whose prior is about to be replaced.

    Returns:
        The kept file, or None (no prior there, or one of other weights: no store needs it).

    Raises:
        WeightsError: the checkpoint or its prior is damaged.
    """
    found = checkpoint_halo_prior(path)
    if found is None:
        return None
    prior, base_digest = found
    digest = state_digest(load_with_delta(path, base_digest, prior).state_dict())
    kept = prior.with_name(f"{Path(path).stem}-halo-{digest[:12]}.pt")
    prior.replace(kept)
    return kept


def load_checkpoint_for(path: str | Path, halo_prior: bool = False,
                        digest: str | None = None) -> torch.nn.Module:
    """A checkpoint's weights, or with ``halo_prior`` its halo prior's where one lies beside it
    (:func:`checkpoint_halo_prior`); ``digest`` (a store's) picks whichever of the two has it,
    or a prior of these weights since refitted (:func:`keep_replaced_halo_prior`).

    Args:
        path: the checkpoint.
        halo_prior: load the prior beside it where it refits these weights (else the base).
        digest: the digest a store records: the base or the prior that has it is loaded.

    Returns:
        The model.

    Raises:
        WeightsError: a missing or damaged file (the caller compares the digest it gets with
            the store's).
    """
    if digest is None and not halo_prior:
        return load_checkpoint(path)
    found = checkpoint_halo_prior(path)
    if found is None:
        return load_checkpoint(path)  # a store's digest is compared by the caller
    prior, base_digest = found
    if digest == base_digest:
        return load_checkpoint(path, expected_digest=base_digest)
    try:
        return load_with_delta(path, base_digest, prior, expected_digest=digest)
    except WeightsError:
        if digest is None:
            raise
    kept = prior.with_name(f"{Path(path).stem}-halo-{digest[:12]}.pt")  # a prior since refitted
    if kept.is_file():
        return load_with_delta(path, base_digest, kept, expected_digest=digest)
    return load_checkpoint(path)  # other weights than the store's: the caller says so


def load_shipped(arch: str, quality: float | None, halo_prior: bool = False,
                 digest: str | None = None) -> tuple[torch.nn.Module, float]:
    """Shipped weights of ``arch`` at ``quality``: the base, or with ``halo_prior`` its halo
    prior where one ships. ``digest`` (a store's) picks whichever of the two has it.

    Args:
        arch: a registry name.
        quality: a shipped quality (a variable-rate model's level), or None for the default.
        halo_prior: load the halo prior where one ships.
        digest: the digest a store records; it decides base or prior (or a superseded prior).

    Returns:
        The model and the quality loaded.

    Raises:
        WeightsError: no such shipped weights, or a file fails its digest.
        ValueError: a level outside a variable-rate model's scale.
    """
    earlier = _earlier_variable_rate(arch, quality, digest) if digest is not None else None
    if earlier is not None:
        return earlier
    path, q, base_digest = shipped_path(arch, quality)
    prior = shipped_halo_prior(arch, q)
    if digest is not None:
        if digest == base_digest:
            halo_prior = False
        elif prior is not None and digest == prior[1]:
            halo_prior = True
        else:  # a store written with a halo prior since refitted: it still ships
            model = _with_digest(_quality_entry(arch, q), digest)
            if model is not None:
                return model, q
    if halo_prior and prior is not None:
        return load_with_delta(path, base_digest, prior[0], expected_digest=prior[1]), q
    return load_checkpoint(path, expected_digest=base_digest), q


def _earlier_variable_rate(arch: str, quality: float | None,
                           digest: str) -> tuple[torch.nn.Module, float] | None:
    """A variable-rate model's earlier shipped weights (or one of their priors) that have
    ``digest``, with ``quality`` checked against *their* scale: a store written at level 10 of
    a 14-level model stays readable after weights of fewer levels ship.

    Args:
        arch: a registry name.
        quality: the store's level (None: the current weights' default level).
        digest: the digest the store records.

    Returns:
        ``(model, level)``, or None where ``arch`` is not variable-rate or no earlier weights
        have ``digest`` (the current ones are looked up as usual).

    Raises:
        WeightsError: the file that has ``digest`` is missing or damaged.
        ValueError: a level outside the earlier weights' scale.
    """
    entry = shipped_index().get(arch)
    if not entry or not is_variable_rate_entry(entry):
        return None
    for old in entry.get("superseded", []):
        model = _with_digest(old, digest)
        if model is not None:
            return model, model.check_level(entry["default"] if quality is None else quality)
    return None


def _with_digest(entry: dict, digest: str) -> torch.nn.Module | None:
    """The shipped weights of an index entry (``{"file", "digest", "halo_prior",
    "halo_prior_superseded"}``: a quality's, a variable-rate model's, or one under its
    ``superseded``) that have ``digest``: its base, or its base with its halo prior or one since
    refitted; those ship on so that the stores written with them keep decoding.

    Args:
        entry: the index entry.
        digest: the digest a store records.

    Returns:
        The model, or None where none of the entry's files has ``digest``.

    Raises:
        WeightsError: the file that has ``digest`` is missing or damaged.
    """
    base = _weights_file(entry["file"])
    if entry["digest"] == digest:
        return load_checkpoint(base, expected_digest=digest)
    for prior in [entry.get("halo_prior") or {}, *entry.get("halo_prior_superseded", [])]:
        if prior.get("digest") == digest:
            return load_with_delta(base, entry["digest"], _weights_file(prior["file"]),
                                   expected_digest=digest)
    return None

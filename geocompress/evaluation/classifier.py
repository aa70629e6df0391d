"""Downstream scene classification on reconstructed tiles (the paper's IV-B, Figs. 15 - 16).

A torchvision ResNet-18 (``weights=None``: nothing is downloaded, it is trained here from scratch)
is trained on the *original* training tiles of a labelled image set and then classifies the test
tiles as each codec reconstructed them; the overall accuracy (OA) per codec and the confusion
matrices say how much of what a classifier needs survives compression. The paper uses EMTCAL at a
10 % training ratio on NWPU-RESISC45; this is a smaller, reproducible stand-in, so compare codecs
with each other and with the "original" row, not with the paper's absolute OA.

Training is deterministic (seeded data order and augmentation: flips and 90-degree rotations, the
symmetries of nadir imagery) and resumable: the state is written after every epoch, and a rerun
continues from the last finished one. Tiles are resized once to ``size`` (128 by default: a
ResNet-18 step at 256 px costs several times more, too much for a 2-core CPU machine; the
classifier sees the reconstruction at that size too, so codecs are compared on equal terms). On a
CPU with native bf16 (AMX / AVX512-BF16) training runs under bf16 autocast in channels-last layout,
faster than float32 (``precision="float32"`` turns it off); prediction always runs in float32.
Measured training costs, with their provenance: ``catalogs/evaluations/paper-budget.md``, section
*The downstream classifier's training cost*.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .images import ImageSet

__all__ = [
    "Classifier",
    "ClassifierConfig",
    "confusion_matrix",
    "load_classifier",
    "overall_accuracy",
    "train_classifier",
]

STATE = "classifier_state.pt"
FINAL = "classifier.pt"
LOG = "classifier_log.csv"


@dataclass(frozen=True)
class ClassifierConfig:
    """Recipe of the ResNet-18 scene classifier (see the module docstring).

    A finished classifier is reused, and a training state resumed, only under the same recipe,
    so every field that changes the result is here.

    Attributes:
        size: tiles are resized to ``size`` x ``size`` (training and prediction alike).
        epochs: training epochs (cosine learning-rate schedule over them).
        batch: tiles per step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        seed: seeds the weights, the data order and the augmentation.
        threads: torch threads while training (None: as set).
        precision: ``"auto"``: bf16 autocast where the CPU has native bf16; ``"float32"``.
    """

    size: int = 128
    epochs: int = 40
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 5e-4
    seed: int = 0
    threads: int | None = None
    precision: str = "auto"  # "auto": bf16 autocast where the CPU has native bf16; "float32"


def _to_float(pixels: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """C x H x W uint8/uint16 tiles -> N x 3 x size x size float in [0, 1] (grey -> 3 bands)."""
    out = []
    for p in pixels:
        a = np.asarray(p)
        peak = float(np.iinfo(a.dtype).max)
        t = torch.from_numpy(a.astype(np.float32) / peak)
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        t = t[:3][None]
        if t.shape[-2:] != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
        out.append(t[0])
    return torch.stack(out) if out else torch.zeros(0, 3, size, size)


def _model(n_classes: int) -> torch.nn.Module:
    from torchvision.models import resnet18

    return resnet18(weights=None, num_classes=n_classes)


class Classifier:
    """A trained classifier: maps C x H x W tiles to indices into ``classes``.

    Args:
        model: the trained network (put in eval mode).
        classes: class names, in the order of the network's outputs.
        mean: per-band mean of the training tiles (in [0, 1]), subtracted before the network.
        std: per-band standard deviation, divided by.
        size: the input size the network was trained at; tiles are resized to it.
        meta: the checkpoint's description (recipe, validation accuracy, ...), shown in reports.
    """

    def __init__(self, model: torch.nn.Module, classes: list[str], mean: list[float],
                 std: list[float], size: int, meta: dict | None = None) -> None:
        self.model = model.eval()
        self.classes = list(classes)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.size = int(size)
        self.meta = dict(meta or {})

    @torch.no_grad()
    def predict(self, pixels: Sequence[np.ndarray], batch: int = 64) -> np.ndarray:
        """Class indices of tiles, in float32 whatever precision trained the network.

        Args:
            pixels: C x H x W uint8 / uint16 tiles (originals or reconstructions; grey tiles are
                repeated to 3 bands).
            batch: tiles per forward pass.

        Returns:
            One index into ``classes`` per tile.
        """
        preds = []
        for i in range(0, len(pixels), batch):
            x = (_to_float(pixels[i:i + batch], self.size) - self.mean) / self.std
            preds.append(self.model(x).argmax(1).numpy())
        return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def load_classifier(path: str | Path) -> Classifier:
    """The classifier stored by :func:`train_classifier`.

    Args:
        path: its checkpoint (``classifier.pt``).

    Returns:
        The :class:`Classifier`, its ``meta`` the whole checkpoint.

    Raises:
        FileNotFoundError: no such file.
    """
    ck = torch.load(Path(path), map_location="cpu", weights_only=False)
    model = _model(len(ck["classes"]))
    model.load_state_dict(ck["state_dict"])
    return Classifier(model, ck["classes"], ck["mean"], ck["std"], ck["config"]["size"], ck)


def overall_accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Overall accuracy (OA), the paper's classification measure (Fig. 15).

    Args:
        y_true: true class indices.
        y_pred: predicted class indices, one per true one.

    Returns:
        The share of correct predictions; NaN for no samples (not 0: nothing was measured).
    """
    y, p = np.asarray(y_true), np.asarray(y_pred)
    return float((y == p).mean()) if len(y) else float("nan")


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n: int) -> np.ndarray:
    """Counts of true class against predicted class (the paper's Fig. 16 normalises its rows).

    Args:
        y_true: true class indices in ``range(n)``.
        y_pred: predicted class indices in ``range(n)``.
        n: the number of classes (classes never seen still get a row and a column).

    Returns:
        ``n x n`` int64 counts, rows = true class, columns = predicted class.
    """
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Per-sample flips and 90-degree rotations (the dihedral symmetries of nadir imagery)."""
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        t = x[i]
        if rng.random() < 0.5:
            t = t.flip(-1)
        t = torch.rot90(t, int(rng.integers(4)), dims=(-2, -1))
        out[i] = t
    return out


def _labels(images: ImageSet, classes: list[str]) -> np.ndarray:
    missing = {im.label for im in images if im.label not in classes}
    if missing:
        raise ValueError(f"labels {sorted(map(str, missing))} are not among the classes {classes}")
    return np.array([classes.index(im.label) for im in images], dtype=np.int64)


@dataclass(frozen=True)
class _Data:
    """The training tiles as tensors, their normalisation, and the validation tiles (normalised)."""

    x_train: torch.Tensor        # N x 3 x size x size in [0, 1], not normalised (augmented per step)
    y_train: torch.Tensor
    mean: list[float]            # per band, of the training tiles
    std: list[float]
    x_val: torch.Tensor | None   # normalised; None without validation images
    y_val: np.ndarray | None

    @property
    def m_t(self) -> torch.Tensor:
        return torch.tensor(self.mean).view(1, 3, 1, 1)

    @property
    def s_t(self) -> torch.Tensor:
        return torch.tensor(self.std).view(1, 3, 1, 1)


@dataclass(frozen=True)
class _Setup:
    """The network and its optimiser, and how it computes (bf16 autocast in channels-last or not)."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    bf16: bool
    layout: torch.memory_format


def _reusable(final: Path, config: ClassifierConfig) -> bool:
    """A finished classifier of this very recipe is already in the folder."""
    if not final.exists():
        return False
    ck = torch.load(final, map_location="cpu", weights_only=False)
    return ck.get("config") == asdict(config)


def _data(train: ImageSet, val: ImageSet | None, size: int, classes: list[str]) -> _Data:
    x_train = _to_float([im.pixels for im in train], size)
    y_train = torch.from_numpy(_labels(train, classes))
    mean = x_train.mean(dim=(0, 2, 3)).tolist()
    std = x_train.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    m_t, s_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    x_val = y_val = None
    if val is not None and len(val):
        x_val = (_to_float([im.pixels for im in val], size) - m_t) / s_t
        y_val = _labels(val, classes)
    return _Data(x_train, y_train, mean, std, x_val, y_val)


def _setup(config: ClassifierConfig, n_classes: int) -> _Setup:
    """The seeded network, AdamW and the cosine schedule, in the precision ``config`` asks for."""
    from geocompress.codec.precision import cpu_bf16_supported

    if config.precision not in ("auto", "float32"):
        raise ValueError(f"classifier precision must be 'auto' or 'float32', got {config.precision!r}")
    bf16 = config.precision == "auto" and cpu_bf16_supported()
    layout = torch.channels_last if bf16 else torch.contiguous_format
    torch.manual_seed(config.seed)
    model = _model(n_classes).to(memory_format=layout)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, config.epochs))
    return _Setup(model, opt, sched, bf16, layout)


def _restore(out: Path, setup: _Setup, config: ClassifierConfig, classes: list[str]
             ) -> tuple[int, float, dict | None]:
    """Resume from the state of the last finished epoch (same recipe and classes only); returns
    (first epoch to run, best score so far, best weights so far). A fresh start clears the log."""
    start, best_acc, best_state = 0, -1.0, None
    state_path = out / STATE
    if state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        if st["config"] == asdict(config) and st["classes"] == classes:
            setup.model.load_state_dict(st["model"])
            setup.opt.load_state_dict(st["opt"])
            setup.sched.load_state_dict(st["sched"])
            start, best_acc, best_state = st["epoch"], st["best_acc"], st["best_state"]
    log_path = out / LOG
    if start == 0 and log_path.exists():
        log_path.unlink()
    return start, best_acc, best_state


def _train_epoch(setup: _Setup, data: _Data, config: ClassifierConfig, epoch: int,
                 progress: bool) -> tuple[float, float]:
    """One seeded pass over the shuffled, augmented training tiles; (mean loss, train accuracy)."""
    from tqdm.auto import tqdm

    model, opt, layout = setup.model, setup.opt, setup.layout
    m_t, s_t = data.m_t, data.s_t
    n = len(data.x_train)
    rng = np.random.default_rng([config.seed, epoch])
    torch.manual_seed(config.seed * 1000 + epoch)
    order = rng.permutation(n)
    model.train()
    losses, correct = [], 0
    steps = range(0, n, config.batch)
    for i in tqdm(steps, desc=f"classifier epoch {epoch + 1}/{config.epochs}",
                  disable=not progress, leave=False):
        idx = order[i:i + config.batch]
        if len(idx) < 2:  # BatchNorm needs 2 samples
            continue
        x = ((_augment(data.x_train[idx], rng) - m_t) / s_t).contiguous(memory_format=layout)
        y = data.y_train[idx]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=setup.bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        correct += int((logits.argmax(1) == y).sum())
    setup.sched.step()
    return float(np.mean(losses)) if losses else float("nan"), correct / max(1, n)


def _val_accuracy(model: torch.nn.Module, data: _Data) -> float:
    """OA on the validation tiles (float32, batches of 64); NaN without validation images."""
    if data.x_val is None:
        return float("nan")
    model.eval()
    with torch.no_grad():
        x_val = data.x_val
        pred = torch.cat([model(x_val[j:j + 64]).argmax(1) for j in range(0, len(x_val), 64)])
    return overall_accuracy(data.y_val, pred.numpy())


def _log_epoch(log_path: Path, row: dict[str, float]) -> None:
    new = not log_path.exists()
    with open(log_path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _save(obj: dict, path: Path) -> None:
    """``torch.save`` through ``<stem>.tmp``, so a kill never leaves half a checkpoint.

    Not :func:`geocompress.atomic.atomic_save`: torch names the archive inside the file after the
    file it writes, so that function's ``<name>.pt.tmp`` would change the bytes of the checkpoints
    this module has always written."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def train_classifier(train: ImageSet, val: ImageSet | None, out_dir: str | Path,
                     config: ClassifierConfig = ClassifierConfig(), classes: list[str] | None = None,
                     progress: bool = True) -> Path:
    """Train (or resume, or reuse) the classifier in ``out_dir``.

    Resumable because training on a shared 2-core CPU gets interrupted: the state is saved after
    every epoch, and a finished classifier of the same recipe is returned as it is.

    Args:
        train: labelled training images (originals, never reconstructions).
        val: labelled validation images choosing the best epoch (None: the last epoch is kept).
        out_dir: folder of the checkpoint, the training state and the per-epoch log.
        config: the recipe.
        classes: class names in output order (None: ``train.classes``, else the sorted labels).
        progress: show a progress bar per epoch.

    Returns:
        The path of the final checkpoint (``classifier.pt``).

    Raises:
        ValueError: ``train`` is not labelled, a label is not among ``classes``, or
            ``config.precision`` is neither ``"auto"`` nor ``"float32"``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / FINAL
    if _reusable(final, config):
        return final
    if not train.labelled():
        raise ValueError("classifier training needs labelled images (class sub-folders or a "
                         "dataset with classes)")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    classes = list(classes or train.classes or sorted({im.label for im in train}))
    data = _data(train, val, config.size, classes)
    setup = _setup(config, len(classes))
    start, best_acc, best_state = _restore(out, setup, config, classes)
    for epoch in range(start, config.epochs):
        t0 = time.time()
        loss, train_acc = _train_epoch(setup, data, config, epoch, progress)
        val_acc = _val_accuracy(setup.model, data)
        score = val_acc if data.x_val is not None else float(epoch)
        if score >= best_acc:
            best_acc = score
            best_state = {k: v.clone() for k, v in setup.model.state_dict().items()}
        _log_epoch(out / LOG, {"epoch": epoch + 1, "loss": loss, "train_acc": train_acc,
                               "val_acc": val_acc, "seconds": time.time() - t0})
        _save({"model": setup.model.state_dict(), "opt": setup.opt.state_dict(),
               "sched": setup.sched.state_dict(), "epoch": epoch + 1, "best_acc": best_acc,
               "best_state": best_state, "config": asdict(config), "classes": classes}, out / STATE)

    ck = {"state_dict": best_state if best_state is not None else setup.model.state_dict(),
          "classes": classes, "mean": data.mean, "std": data.std, "config": asdict(config),
          "val_acc": best_acc if data.x_val is not None else None, "train_images": len(train),
          "val_images": len(val) if val is not None else 0, "arch": "torchvision resnet18 (weights=None)",
          "trained_in": "bf16 autocast, channels-last" if setup.bf16 else "float32"}
    _save(ck, final)
    (out / "classifier.json").write_text(json.dumps({k: v for k, v in ck.items() if k != "state_dict"},
                                                     indent=1) + "\n")
    return final

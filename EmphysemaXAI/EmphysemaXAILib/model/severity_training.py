"""Training the severity network: stage 1 on tiles, stage 2 on case bags, and its predictions.

Stage 1 (:func:`train_patch_model`): tiles with per-tile truth (phantoms only). Loss per patch:
binary cross-entropy of the predicted emphysema fraction against the true
fraction (a soft target in [0, 1]) plus cross-entropy of the subtype. Adam, a plateau learning-
rate schedule, early stopping on the validation loss (the best weights are kept), fixed seeds
and deterministic algorithms on the CPU, mixed precision on a GPU; a per-epoch log (CSV) and a
training-curve PNG; a tqdm progress bar.

Stage 2 (:func:`train_case_model`): bags of a case's tiles with the case label; trains the gated
attention pooling and class head (encoder frozen, phantoms) or the whole network end to end
(users' cohorts, which have case labels only: extent loss when ``extent_pct`` is known, a band
loss keeping the extent inside the labelled class otherwise, and the class head's cross-entropy).
:func:`predict_bags` gives the per-case rows the figures are computed from.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..analysis.severity import SEVERITY_CLASSES, SEVERITY_CUTPOINTS, severity_bands, severity_class
from .checkpoint import pick_device
from .severity_dataset import CaseBag


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5          # epochs without validation improvement before stopping
    subtype_weight: float = 0.2
    seed: int = 0
    device: str = "auto"       # auto (CUDA, MPS, CPU), cpu, cuda


class EarlyStopping:
    """Keeps the best weights by validation loss; ``step`` returns True when ``patience``
    epochs passed without improvement; ``restore`` loads the best weights back."""

    def __init__(self, patience: int):
        self.patience, self.best, self.state, self.waited = patience, float("inf"), None, 0

    def step(self, model, val_loss: float) -> bool:
        if val_loss < self.best - 1e-6:
            self.best, self.waited = val_loss, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.waited += 1
        return self.waited >= self.patience

    def restore(self, model) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


def _loss(model, batch, device, config):
    out = model(batch["image"].to(device))
    fraction = batch["fraction"].to(device).float()
    loss = nn.functional.binary_cross_entropy(out["fraction"].float().clamp(1e-6, 1 - 1e-6), fraction)
    loss = loss + config.subtype_weight * nn.functional.cross_entropy(out["subtype_logits"].float(),
                                                                      batch["subtype"].to(device))
    mae = (out["fraction"].float() - fraction).abs().sum()
    return loss, mae


def train_patch_model(model, train_set, val_set, config: TrainConfig, out_dir=None,
                      progress: bool = True) -> list[dict]:
    """Train ``model`` in place; returns the per-epoch history (list of dicts).

    Writes ``log.csv`` and ``training_curve.png`` into ``out_dir`` when given.
    """
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    if getattr(train_set, "transform", None) is not None:
        train_set.transform.set_random_state(seed=config.seed)  # same augmentations every run
    device = pick_device(config.device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    model.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=True,
                                               generator=generator)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=config.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    history, stopper = [], EarlyStopping(config.patience)
    bar = tqdm(range(config.epochs), desc="epochs", disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        for batch in train_loader:
            optimizer.zero_grad()
            with torch.autocast(device.type, enabled=amp):
                loss, _ = _loss(model, batch, device, config)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.item() * len(batch["image"])
            count += len(batch["image"])
        model.eval()
        val_total, val_mae, val_count = 0.0, 0.0, 0
        with torch.no_grad():
            for batch in val_loader:
                loss, mae = _loss(model, batch, device, config)
                val_total += float(loss) * len(batch["image"])
                val_mae += float(mae)
                val_count += len(batch["image"])
        val_loss = val_total / max(val_count, 1)
        scheduler.step(val_loss)
        row = {"epoch": epoch + 1, "train_loss": total / max(count, 1), "val_loss": val_loss,
               "val_fraction_mae": val_mae / max(val_count, 1), "lr": optimizer.param_groups[0]["lr"],
               "seconds": time.perf_counter() - start}
        history.append(row)
        bar.set_postfix(train=f"{row['train_loss']:.4f}", val=f"{val_loss:.4f}")
        if stopper.step(model, val_loss):
            break
    stopper.restore(model)
    if out_dir is not None:
        write_patch_log(history, config, Path(out_dir))
    return history


def write_patch_log(history, config, out: Path) -> None:
    """``log.csv`` and ``training_curve.png`` of stage 1 into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(history)
    frame.to_csv(out / "log.csv", index=False)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(frame["epoch"], frame["train_loss"], label="training")
    ax.plot(frame["epoch"], frame["val_loss"], label="validation")
    best = int(np.argmin(frame["val_loss"]))
    ax.axvline(frame["epoch"][best], color="gray", ls=":", label="best (kept)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(f"training curve (lr {config.lr:g}, batch {config.batch_size})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "training_curve.png", dpi=80)
    plt.close(fig)


def config_dict(config: TrainConfig) -> dict:
    return asdict(config)


def _bag_tensors(bag: CaseBag, rng, max_tiles: int | None):
    pick = np.arange(len(bag.images))
    if max_tiles is not None and len(pick) > max_tiles:
        pick = np.sort(rng.choice(pick, max_tiles, replace=False))
    images = torch.from_numpy(bag.images[pick].astype(np.float32))
    lung = torch.from_numpy(bag.lung_count[pick].astype(np.float32) / bag.images[0].size)
    return images, lung


def case_outputs(model, bag: CaseBag, device, rng=None, max_tiles: int | None = None, grad: bool = False) -> dict:
    """The model's case outputs for a bag (all tiles, or a random subset of ``max_tiles``)."""
    images, lung = _bag_tensors(bag, rng if rng is not None else np.random.default_rng(0), max_tiles)
    with torch.set_grad_enabled(grad):
        outs = [model(images[i:i + 256].to(device)) for i in range(0, len(images), 256)]
        patch = {k: torch.cat([o[k] for o in outs]) for k in ("fraction", "embedding")}
        return {**model.case(patch, lung.to(device)), "fractions": patch["fraction"]}


def _case_loss(out, bag: CaseBag, cutpoints, extent_weight: float):
    loss = torch.zeros(())
    if bag.label >= 0:
        loss = loss + torch.nn.functional.cross_entropy(out["class_logits"][None].float().cpu(),
                                                        torch.tensor([bag.label]))
    extent = out["extent_pct"].float().cpu()
    if np.isfinite(bag.extent_pct):
        loss = loss + extent_weight * ((extent - bag.extent_pct) / 10.0) ** 2
    elif bag.label >= 0:   # keep the extent inside the labelled band
        lo, hi = list(severity_bands(cutpoints).values())[bag.label]
        loss = loss + extent_weight * (torch.relu(lo - extent) + torch.relu(extent - hi)) / 10.0
    return loss


def train_case_model(model, train: list, val: list, *, epochs: int = 30, lr: float = 1e-3, patience: int = 6,
                     max_tiles: int = 64, freeze_encoder: bool = True, extent_weight: float = 1.0,
                     cutpoints=SEVERITY_CUTPOINTS, seed: int = 0, device="cpu", progress: bool = True) -> list:
    """Stage 2 on bags of tiles; batch norm keeps its running statistics. Early stopping on the
    validation loss (best weights kept). Returns the per-epoch history."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 2])
    encoder_params = list(model.encoder.parameters()) + list(model.fraction_head.parameters()) + \
        list(model.subtype_head.parameters())
    for p in encoder_params:
        p.requires_grad_(not freeze_encoder)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    model.to(device).eval()
    history, stopper = [], EarlyStopping(patience)
    bar = tqdm(range(epochs), desc="case epochs", disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        total = 0.0
        for index in rng.permutation(len(train)):
            optimizer.zero_grad()
            loss = _case_loss(case_outputs(model, train[index], device, rng, max_tiles, grad=True),
                              train[index], cutpoints, extent_weight)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        val_loss = float(np.mean([float(_case_loss(case_outputs(model, b, device), b, cutpoints, extent_weight))
                                  for b in val])) if val else total / max(len(train), 1)
        scheduler.step(val_loss)
        history.append({"epoch": epoch + 1, "train_loss": total / max(len(train), 1), "val_loss": val_loss,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - start})
        bar.set_postfix(train=f"{history[-1]['train_loss']:.4f}", val=f"{val_loss:.4f}")
        if stopper.step(model, val_loss):
            break
    stopper.restore(model)
    for p in model.parameters():
        p.requires_grad_(True)
    return history


def predict_bags(model, bags: list, device="cpu", cutpoints=SEVERITY_CUTPOINTS, calibration=(1.0, 0.0)) -> list:
    """Per case: ``name``, ``extent_true``, ``label`` (class name or None), ``extent_raw`` (before
    calibration), ``extent_pct`` (after), ``class`` (band of the extent), ``head_probabilities`` (4,)."""
    model.eval()
    slope, intercept = calibration
    rows = []
    for bag in bags:
        out = case_outputs(model, bag, device)
        raw = float(out["extent_pct"])
        counts = bag.lung_count.astype(float)
        fractions = np.clip(slope * out["fractions"].float().cpu().numpy() + intercept / 100, 0, 1)
        extent = float(100 * (fractions * counts).sum() / counts.sum())
        rows.append({"name": bag.name, "subject": bag.subject,
                     "extent_true": bag.extent_pct if np.isfinite(bag.extent_pct) else None,
                     "label": SEVERITY_CLASSES[bag.label] if bag.label >= 0 else None,
                     "extent_raw": raw, "extent_pct": extent, "class": severity_class(extent, cutpoints),
                     "head_probabilities": torch.softmax(out["class_logits"].float(), 0).tolist(),
                     **(bag.info or {})})
    return rows

"""Training of the patch level of the severity network (issue 6, first part).

Loss per patch: binary cross-entropy of the predicted emphysema fraction against the true
fraction (a soft target in [0, 1]) plus cross-entropy of the subtype. Adam, a plateau learning-
rate schedule, early stopping on the validation loss (the best weights are kept), fixed seeds
and deterministic algorithms on the CPU, mixed precision on a GPU; a per-epoch log (CSV) and a
training-curve PNG; a tqdm progress bar.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


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


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then the CPU (``auto``), or the named device."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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


def train_patch_model(model, train_set, val_set, config: TrainConfig, out_dir=None, progress: bool = True):
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
        _write_log(history, config, Path(out_dir))
    return history


def _write_log(history, config, out: Path) -> None:
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

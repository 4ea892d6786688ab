"""Training loop: random windows from the precomputed features, fixed step count, CPU.

A fixed number of steps (not a time budget) keeps runs reproducible for a given seed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from training.channels import ARKIT_BLENDSHAPES
from training.corpus import Arrays
from training.feature_noise import FeatureNoise, NoiseConfig
from training.model import LOG_FLOOR, N_FRAMES, Trunk

# Lip closure and jaw are what viewers notice first: weigh them up in the loss.
_HEAVY = {"jawOpen": 3.0, "mouthClose": 3.0, "mouthPressLeft": 2.0, "mouthPressRight": 2.0,
          "mouthFunnel": 1.5, "mouthPucker": 1.5, "mouthRollLower": 1.5}  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 18000
    batch: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    viseme_weight: float = 0.05
    # Regularisation against memorising sentences (the held-out gap is across sentences):
    # with this probability a window's far context is blanked to the silence level, so the
    # net must read the lips from the frames around the centre, not from the words around it.
    context_drop: float = 0.5
    context_keep: tuple[int, int] = (6, 25)  # frames kept each side of the centre, drawn uniformly
    band_masks: int = 2  # SpecAugment-style frequency masks per window, up to 5 bands each
    # Weight of mouthClose's "closed" term in the BCE. With weight w the loss is minimised by
    # w*y / (w*y + 1 - y) instead of y, so the lips read as closed (>= 0.5) from y = 1/(1+w)
    # (0.4) on: where place of articulation is uncertain (m or n?), a closure is shown
    # a little sooner. Unweighted, the centre-branch net's closure F1 peaked at y = 0.4.
    closure_pos_weight: float = 1.5
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # mixed into the band powers
    seed: int = 1234


def finishing(cfg: TrainConfig) -> TrainConfig:
    """The last stage: a short, gentle run with little noise, from the main stage's network.

    Noise in 40 % of the windows buys robustness in noisy rooms, but on clean speech the
    network then hedges: more closures on "n" (the held-out voice's clean false closures rose
    from 20 to 28 per minute against the recipe without noise). A few thousand steps at a
    sixth of the learning rate with noise in a tenth of the windows settle the clean decisions
    again while the features the noisy stage learned stay.
    """
    return replace(
        cfg, steps=2000, lr=cfg.lr / 6, noise=replace(cfg.noise, probability=0.1), seed=cfg.seed + 3
    )


@dataclass
class TrainLog:
    seconds: float
    final_loss: float
    losses: list[float]


def _batch(arrays: dict[str, torch.Tensor], idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
    frames = idx[:, None] + torch.arange(N_FRAMES)
    feats = arrays["feats"][frames].transpose(1, 2)  # [B, 40, 51]
    centre = idx  # targets are stored at the window's start index
    return feats, arrays["blend"][centre], arrays["vis"][centre]


def _augment_features(feats: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Context blanking and band masks on a [B, 40, 51] batch of log band energies."""
    b, n_bands, n_frames = feats.shape
    floor = math.log(LOG_FLOOR)
    centre = n_frames // 2
    frame = torch.arange(n_frames)
    keep = torch.randint(cfg.context_keep[0], cfg.context_keep[1] + 1, (b, 1), generator=gen)
    dropped = torch.rand(b, 1, generator=gen) < cfg.context_drop
    far = dropped & ((frame[None] - centre).abs() > keep)  # [B, 51]
    feats = feats.masked_fill(far[:, None, :], floor)
    band = torch.arange(n_bands)
    for _ in range(cfg.band_masks):
        start = torch.randint(0, n_bands, (b, 1), generator=gen)
        width = torch.randint(0, 6, (b, 1), generator=gen)
        hit = (band[None] >= start) & (band[None] < start + width)  # [B, 40]
        feats = torch.where(hit[:, :, None], feats.mean(dim=(1, 2), keepdim=True), feats)
    return feats


def train(
    data: Arrays, cfg: TrainConfig, start: Trunk | None = None, log_every: int = 500
) -> tuple[Trunk, TrainLog]:
    """`cfg.steps` steps from `start` (a fresh `Trunk` if None)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    arrays = {
        "feats": torch.from_numpy(data.feats),
        "blend": torch.from_numpy(data.blend),
        "vis": torch.from_numpy(data.vis),
    }
    starts = torch.from_numpy(data.starts)
    mix_noise = FeatureNoise(cfg.noise, arrays["feats"], starts)
    weights = torch.ones(len(ARKIT_BLENDSHAPES))
    for name, w in _HEAVY.items():
        weights[ARKIT_BLENDSHAPES.index(name)] = w
    weights /= weights.mean()
    pos_weight = torch.ones(len(ARKIT_BLENDSHAPES))
    pos_weight[ARKIT_BLENDSHAPES.index("mouthClose")] = cfg.closure_pos_weight

    model = Trunk() if start is None else start
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (cfg.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    losses: list[float] = []
    running = 0.0
    t0 = time.time()
    model.train()
    for step in range(cfg.steps):
        idx = starts[torch.randint(len(starts), (cfg.batch,), generator=gen)]
        feats, blend_t, vis_t = _batch(arrays, idx)
        feats = _augment_features(mix_noise(feats, gen), cfg, gen)
        blend_logit, vis_logit = model(feats)
        # BCE on logits with soft targets: unlike L1/L2 on the sigmoid it cannot saturate a
        # rarely-active channel (mouthClose) into a dead, always-zero output.
        bce = F.binary_cross_entropy_with_logits(
            blend_logit, blend_t, reduction="none", pos_weight=pos_weight
        )
        blend_loss = (bce * weights).mean()
        vis_loss = -(vis_t * F.log_softmax(vis_logit, dim=-1)).sum(-1).mean()
        loss = blend_loss + cfg.viseme_weight * vis_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % log_every == 0:
            losses.append(running / log_every)
            print(
                f"step {step + 1}/{cfg.steps} loss {losses[-1]:.4f} ({time.time() - t0:.0f} s)",
                flush=True,
            )
            running = 0.0
    model.eval()
    return model, TrainLog(time.time() - t0, losses[-1] if losses else float("nan"), losses)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)

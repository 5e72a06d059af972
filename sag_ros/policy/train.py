"""`sag train`: fit a Diffusion Policy on demonstrations, resumably.

AdamW with linear warm-up and cosine decay, adaptive EMA weights (the ones that get evaluated and
shipped), atomic checkpoints every ``checkpoint_every`` steps: ``train_state.pt`` (everything needed to
resume: weights, EMA, optimizer, LR schedule, RNG, step) and ``policy.pt`` (the EMA policy). A resumed
run refuses a different policy config or data set. ``init_from`` warm-starts a new run from a policy checkpoint of
the same config (fine-tuning, or training a shipped policy further with a fresh learning-rate schedule).

The run trains on any torch device (a GPU when lent one) while batches are drawn and noise is seeded on the CPU,
and a :class:`Deadline` ends an invocation at a checkpoint: a session's background job or a borrowed GPU's minutes
end cleanly, and the same command resumes.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sag_ros.policy.checkpoint import CheckpointError, atomic_torch_save, load_artifact, load_policy, save_policy
from sag_ros.policy.config import PolicyConfig
from sag_ros.policy.data import WindowSampler
from sag_ros.policy.device import batch_to
from sag_ros.policy.policy import DiffusionPolicy

TRAIN_STATE_FORMAT = "sag_ros.train_state"
TRAIN_STATE_VERSION = 1


@dataclass
class TrainConfig:
    """Optimization settings (Diffusion Policy's, with a shorter warm-up for CPU-sized runs)."""

    num_steps: int = 20000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-3
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    checkpoint_every: int = 500
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        for name in ("num_steps", "batch_size", "checkpoint_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)} must be >= 1")
        if not 0 < self.lr < 1:
            raise ValueError(f"train.lr={self.lr} must be in (0, 1)")


class Deadline:
    """A wall-clock budget for one invocation of a resumable training loop (``None``: no limit)."""

    def __init__(self, minutes: float | None) -> None:
        if minutes is not None and not minutes > 0:
            raise ValueError(f"time limit {minutes} min must be > 0")
        self.minutes = minutes
        self._end = None if minutes is None else time.monotonic() + 60.0 * minutes

    def passed(self) -> bool:
        return self._end is not None and time.monotonic() >= self._end

    def stop_note(self, step: int, total: int) -> str:
        return (f"stopped by the {self.minutes:g} min limit at step {step} of {total} (checkpointed); "
                f"run the same command again to resume")


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_decay(step: int, power: float, max_decay: float) -> float:
    """Adaptive EMA decay of Diffusion Policy's EMAModel: small early, approaching ``max_decay``."""
    return min(max_decay, max(0.0, 1.0 - (1.0 + step) ** -power))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def train_policy(policy_config: PolicyConfig, train_config: TrainConfig, sampler: WindowSampler,
                 out_dir: Path, log_every: int = 50, init_from: Path | None = None,
                 device: torch.device = torch.device("cpu"), deadline: Deadline | None = None) -> Path:
    """Train (or resume) into ``out_dir`` on ``device``; returns the path of the EMA policy checkpoint.

    ``init_from``: a policy checkpoint of the same config whose weights (normalizer included) start a new run,
    model and EMA alike; the optimizer and the learning-rate schedule start afresh. Ignored when ``out_dir``
    already holds a run to resume (its own weights are further along). ``deadline``: stop at a checkpoint once
    it has passed. Checkpoints load on any device."""
    torch.set_num_threads(train_config.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path, policy_path = out_dir / "train_state.pt", out_dir / "policy.pt"
    deadline = deadline or Deadline(None)

    torch.manual_seed(train_config.seed)
    model = DiffusionPolicy(policy_config)
    model.normalizer.fit(sampler.normalizer_data())
    model.to(device)
    ema = copy.deepcopy(model).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr, betas=(0.9, 0.95),
                                  weight_decay=train_config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, train_config.warmup_steps, train_config.num_steps))
    generator = torch.Generator().manual_seed(train_config.seed)
    step = 0
    if state_path.exists():
        step = _resume(state_path, policy_config, sampler.data_hash, model, ema, optimizer, schedule, generator, device)
        print(f"resumed from {state_path} at step {step}")
    elif init_from is not None:
        _warm_start(init_from, policy_config, sampler.data_hash, model, ema)

    def checkpoint() -> None:
        atomic_torch_save({
            "format": TRAIN_STATE_FORMAT, "version": TRAIN_STATE_VERSION, "step": step,
            "config": policy_config.to_dict(), "data_hash": sampler.data_hash,
            "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "lr_schedule": schedule.state_dict(), "generator": generator.get_state(), "rng": _global_rng(device),
        }, state_path)
        save_policy(ema, policy_path, data_hash=sampler.data_hash, extra={"train_step": step})

    model.train()
    losses: list[float] = []
    bar = tqdm(total=train_config.num_steps, initial=step, desc="train", dynamic_ncols=True)
    start = time.perf_counter()
    while step < train_config.num_steps:
        obs, action = sampler.sample(train_config.batch_size, generator)
        loss = model.compute_loss(batch_to(obs, device), action.to(device, non_blocking=True), generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
        optimizer.step()
        schedule.step()
        ema_update(ema, model, ema_decay(step, train_config.ema_power, train_config.ema_max_decay))
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if step % log_every == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-log_every:]):.4f}", lr=f"{schedule.get_last_lr()[0]:.2e}")
        out_of_time = step < train_config.num_steps and deadline.passed()
        if step % train_config.checkpoint_every == 0 or step == train_config.num_steps or out_of_time:
            checkpoint()
        if out_of_time:
            break
    bar.close()
    if not policy_path.exists():
        checkpoint()
    if step < train_config.num_steps:
        print(deadline.stop_note(step, train_config.num_steps))
    print(f"trained to step {step} in {time.perf_counter() - start:.1f} s on {device}; EMA policy: {policy_path}")
    return policy_path


def _warm_start(path: Path, policy_config: PolicyConfig, data_hash: str, model: DiffusionPolicy,
                ema: DiffusionPolicy) -> None:
    """Copy a checkpoint's weights into the model and its EMA; refuses another config (load_policy checks it)."""
    source, meta = load_policy(path, expected_config=policy_config)
    model.load_state_dict(source.state_dict())
    ema.load_state_dict(source.state_dict())
    trained_on = meta["data_hash"]
    note = "" if trained_on == data_hash else f" (it was trained on other data: {trained_on} != {data_hash})"
    print(f"warm start from {path}{note}")


def _resume(path: Path, policy_config: PolicyConfig, data_hash: str, model: DiffusionPolicy, ema: DiffusionPolicy,
            optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
            generator: torch.Generator, device: torch.device) -> int:
    state = load_artifact(path, TRAIN_STATE_FORMAT, TRAIN_STATE_VERSION)
    if state["config"] != policy_config.to_dict():
        raise CheckpointError(f"{path}: was trained with another policy config; use a new output folder")
    if state["data_hash"] != data_hash:
        raise CheckpointError(f"{path}: was trained on other data (hash {state['data_hash']} != {data_hash})")
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["lr_schedule"])
    generator.set_state(state["generator"])
    rng = state.get("rng", {})  # absent in states written before it was kept: dropout then draws afresh
    if "cpu" in rng:
        torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    return int(state["step"])


def _global_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """The global generators that dropout draws from (batches and noise use the run's own ``generator``): kept so
    that a resumed run continues exactly as an uninterrupted one would, on the same device."""
    rng = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng

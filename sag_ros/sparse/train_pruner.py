"""`sag train-pruner`: learn G(o) with the policy frozen.

Per batch of observations: the dense chunk (no gradient) and the gated sparse chunk are sampled from the
same initial noise and the same per-step noise; every block is computed in the gated pass and mixed with
its cache stand-in by straight-through gates, so the fidelity loss reaches the pruner through the whole
sampling chain. Loss = L1(sparse, reference) + lambda * |mean(M) - rho_t|, the reference being the dense
chunk (default) or the demonstrated actions, over the whole chunk (default) or only the executed actions, and
either at the end of sampling (default) or averaged over every step's clean-chunk prediction ("trajectory":
an early step that heads for another mode than dense costs as much as a late imprecision; in closed loop such
mode switches between chunks hurt more than small action errors). The target rho_t ramps from the pruner's
initial rate to rho over ``rate_warmup`` iterations, so the cells that matter are found while most blocks
still compute. Both learning rates decay along a cosine to zero at the last iteration: at a constant rate the per-cell offsets keep
flipping cells around the sparsity target and the fidelity drifts back up late in a run.

The sparsity term has no gradient while the hard rate sits exactly at rho (the subgradient of |x| at 0 is 0), and a
warm start at rho begins there: only the fidelity gradient acts, and it pushes every cell towards computing. Adam moves
the shared network's weights coherently, so the whole mask can flip at once (Push-T, rho = 0.8 from interval n=5:
rate 0.80 -> 0.14 -> 0.00 at iterations 7-8, back at 0.76 by iteration 15); the run then oscillates a step or two
around rho, and that run still ended one step away from its warm start (README, "rho = 0.8").

Runs are resumable: every checkpoint also writes ``<out>.train_state.pt`` (pruner, optimizer, RNG, step),
and a new run with the same settings continues from it. ``init_from`` warm-starts from another pruner of the
same policy (e.g. a rho=0.95 pruner fine-tuned from the rho=0.9 one, or SAG from a learned static mask: it then
starts at that mask for every observation), or with ``init_transfer`` of another policy with the same grid (a
policy trained further: its pruners are a better start than random, and are refused for inference);
``init_interval`` starts from the mask of interval caching (every n-th step computes, from step
``init_interval_start`` on), so training begins at a strong static schedule and moves cells where the
fidelity gradient says the observation needs them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sag_ros.policy.data import WindowSampler
from sag_ros.policy.policy import DiffusionPolicy
from sag_ros.policy.device import batch_to
from sag_ros.policy.train import Deadline, lr_factor
from sag_ros.policy.sampling import dense_runner, eager_kernels, prepare_chunk, reverse_diffusion
from sag_ros.policy.checkpoint import CheckpointError, atomic_torch_save, fingerprint, load_artifact
from sag_ros.sparse.artifact import load_pruner, pruner_grid, save_pruner
from sag_ros.sparse.cache import ReuseKind, make_cache
from sag_ros.sparse.mask import interval_mask
from sag_ros.sparse.pruner import Pruner, PrunerConfig, held_mask
from sag_ros.sparse.sampler import GatedRunner, held_step_gates

TRAIN_STATE_FORMAT = "sag_ros.pruner_train_state"
TRAIN_STATE_VERSION = 2


@dataclass
class PrunerTrainConfig:
    target_rate: float = 0.9  # rho
    sparsity_weight: float = 1.0  # lambda
    num_steps: int = 300
    batch_size: int = 16  # 2.7x the samples of batch 6 for ~1.9x the time per iteration on 2 CPU cores
    lr: float = 1e-3  # pruner network
    cell_lr: float = 5e-2  # per-cell logit offsets: fast, so cells separate before the whole mask drifts
    rate_warmup: int = 0  # iterations over which the target ramps from the initial rate to rho
    reuse: ReuseKind = ReuseKind.ONE_FOR_ALL
    reference: str = "dense"  # or "demo"
    fidelity_window: str = "chunk"  # or "executed": only the Ta actions the robot runs (To-1 .. To-1+Ta)
    fidelity_steps: str = "final"  # or "trajectory": every step's clean-chunk prediction, averaged over steps
    use_observation: bool = True  # False: one learned static mask for all observations
    granularity: str = "block"  # "step": whole steps computed or skipped; "hierarchical": held steps over block gates
    step_budget: int | None = None  # hierarchical: computed steps per chunk, placed by the pruner (PrunerConfig)
    hold_x0: bool = False  # wholly pruned steps hold the last computed clean-chunk prediction (sparse.sampler)
    step_cost: float = 0.0  # a computed step's fixed cost (embedding, head, update) in blocks; see pruned_cost
    noise_scale: float = 1.0  # DDPM's fresh noise per step x this while training: the temperature it will run at
    seed: int = 0
    threads: int = 2
    checkpoint_every: int = 25
    init_from: str | None = None  # warm start: path of a pruner trained for the same policy
    init_transfer: bool = False  # ... or for another policy of the same grid (e.g. this one before more training)
    init_interval: int | None = None  # warm start: per-cell offsets that reproduce interval caching
    init_interval_start: int = 0  # ... whose every init_interval-th step from this one on computes

    def __post_init__(self) -> None:
        self.reuse = ReuseKind(self.reuse)
        for name in ("num_steps", "batch_size", "threads", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0.0 < self.target_rate < 1.0:
            raise ValueError(f"target_rate={self.target_rate} must be in (0, 1)")
        if self.reference not in ("dense", "demo"):
            raise ValueError(f"reference={self.reference!r} must be 'dense' or 'demo'")
        if self.fidelity_window not in ("chunk", "executed"):
            raise ValueError(f"fidelity_window={self.fidelity_window!r} must be 'chunk' or 'executed'")
        if self.fidelity_steps not in ("final", "trajectory"):
            raise ValueError(f"fidelity_steps={self.fidelity_steps!r} must be 'final' or 'trajectory'")
        if self.init_from is not None and self.init_interval is not None:
            raise ValueError("choose one warm start: init_from (a pruner) or init_interval (a schedule)")
        if self.init_interval is not None and self.init_interval < 1:
            raise ValueError(f"init_interval={self.init_interval} must be >= 1")
        if self.init_transfer and self.init_from is None:
            raise ValueError("init_transfer needs init_from")
        if self.init_interval is None and self.init_interval_start:
            raise ValueError("init_interval_start needs init_interval")
        if self.step_cost < 0:
            raise ValueError(f"step_cost={self.step_cost} must be >= 0")
        if self.noise_scale < 0:
            raise ValueError(f"noise_scale={self.noise_scale} must be >= 0")
        if self.step_budget is not None and self.granularity != "hierarchical":
            raise ValueError("step_budget places a fixed number of computed steps: it needs granularity='hierarchical'")
        if self.granularity == "hierarchical" and not self.hold_x0:
            raise ValueError("granularity='hierarchical' decides which steps hold: it needs hold_x0")
        if self.step_cost and not self.hold_x0:
            raise ValueError("step_cost counts the fixed cost that held steps skip: it needs hold_x0")
        if self.fidelity_steps == "trajectory" and self.reference != "dense":
            raise ValueError("fidelity_steps='trajectory' compares against the dense trajectory: use reference='dense'")


def pruner_config_for(policy: DiffusionPolicy, train: PrunerTrainConfig) -> PrunerConfig:
    num_steps, num_blocks, obs_feature_dim = pruner_grid(policy)
    return PrunerConfig(num_steps=num_steps, num_blocks=num_blocks, obs_feature_dim=obs_feature_dim,
                        use_observation=train.use_observation, granularity=train.granularity,
                        step_budget=train.step_budget)


def fidelity_slice(policy: DiffusionPolicy, cfg: PrunerTrainConfig) -> slice:
    """Horizon indices the fidelity term compares: the whole predicted chunk, or only the executed actions.

    Closed-loop control runs actions To-1 .. To-1+Ta of each chunk; the rest is never executed, so spending
    the pruner's budget on it can buy open-loop fidelity that the task score never sees.
    """
    return slice(None) if cfg.fidelity_window == "chunk" else policy.executed_slice()


def pruned_cost(gates: torch.Tensor, step_cost: float, step_holds: torch.Tensor | None = None) -> torch.Tensor:
    """The fraction of a dense chunk's cost the gates [B, K, 3L] skip, the quantity the sparsity term drives to rho
    (``step_holds``: a hierarchical pruner's hold gates [B, K], ``gates`` then its :func:`held_mask`).

    Each block costs 1 and each computed step ``step_cost`` more (input embedding, head, sampler update: with
    ONNX Runtime on 2 cores about 2.5 blocks' worth); only a held step (every block pruned, ``hold_x0``) skips
    that too. With ``step_cost`` 0 this is the pruned block fraction of the paper. Counting blocks alone, a
    per-block pruner that keeps one block in most steps looked as sparse as ten whole steps but ran 1.5x slower.
    """
    blocks = gates.mean((-2, -1))
    if not step_cost:
        return blocks.mean()
    held = held_step_gates(gates, step_holds).mean(-1)
    num_blocks = gates.shape[-1]
    return ((num_blocks * blocks + step_cost * held) / (num_blocks + step_cost)).mean()


def target_rate_at(step: int, start_rate: float, cfg: PrunerTrainConfig) -> float:
    """rho_t: linear ramp from ``start_rate`` to rho over ``cfg.rate_warmup`` iterations, then rho."""
    if step >= cfg.rate_warmup:
        return cfg.target_rate
    return start_rate + (cfg.target_rate - start_rate) * step / cfg.rate_warmup


def pruner_loss(policy: DiffusionPolicy, pruner: Pruner, features: torch.Tensor, target: torch.Tensor | None,
                cfg: PrunerTrainConfig, generator: torch.Generator,
                target_rate: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Fidelity + sparsity loss for one batch of observation features [B, To, F] (rho_t defaults to rho)."""
    kernels = eager_kernels(policy.denoiser)
    trajectory = cfg.fidelity_steps == "trajectory"
    dense_trace: list[torch.Tensor] | None = [] if trajectory else None
    sparse_trace: list[torch.Tensor] | None = [] if trajectory else None
    with torch.no_grad():
        inputs = prepare_chunk(policy.denoiser, policy.schedule, features, generator)
        if target is None:
            target = reverse_diffusion(policy.schedule, inputs, kernels, dense_runner(kernels), dense_trace)
    block_gates, holds = pruner.gates_and_holds(features)
    runner = GatedRunner(kernels.block_fns, block_gates, make_cache(cfg.reuse, len(kernels.block_fns)), cfg.hold_x0,
                         holds)
    sparse = reverse_diffusion(policy.schedule, inputs, kernels, runner, sparse_trace)
    window = fidelity_slice(policy, cfg)
    pairs = zip(sparse_trace, dense_trace) if sparse_trace and dense_trace else [(sparse, target)]
    fidelity = torch.stack([F.l1_loss(s[:, window], d[:, window]) for s, d in pairs]).mean()
    rate = pruned_cost(held_mask(block_gates, holds), cfg.step_cost, holds)
    rho_t = cfg.target_rate if target_rate is None else target_rate
    loss = fidelity + cfg.sparsity_weight * (rate - rho_t).abs()
    return loss, {"fidelity": fidelity.item(), "prune_rate": rate.item()}


def train_state_path(out_path: Path) -> Path:
    """Where a run writing ``out_path`` keeps what it needs to resume."""
    return out_path.with_name(out_path.stem + ".train_state.pt")


def _resume_signature(policy: DiffusionPolicy, cfg: PrunerTrainConfig) -> dict:
    """Settings a resumed run must share with the run that wrote the state (the length may grow)."""
    settings = asdict(cfg)
    settings.pop("num_steps")
    settings["reuse"] = cfg.reuse.value
    return {"policy": fingerprint(policy.state_dict()), "settings": settings}


INTERVAL_INIT_MARGIN = 1.0
"""Per-cell offset (in logits) of an interval warm start: large enough that the untrained index branch
(|logit difference| below 0.3 at initialization; the observation branch starts at zero) cannot flip a
cell, small enough that the straight-through gradient (softmax slope 0.2 at 1) still moves cells within
tens of iterations."""


def initial_pruner(policy: DiffusionPolicy, cfg: PrunerTrainConfig) -> Pruner:
    """The pruner a run starts from: fresh, a copy of ``init_from``, or fresh with the interval schedule built in."""
    if cfg.init_interval is not None:
        pruner = Pruner(pruner_config_for(policy, cfg))
        schedule = interval_mask(pruner.config.num_steps, pruner.config.num_blocks, cfg.init_interval,
                                 cfg.init_interval_start)
        with torch.no_grad():  # the observation branch starts at zero (it learns from there): same mask for all
            pruner.obs_proj[-1].weight.zero_()
            pruner.mlp[-1].bias.zero_()
            pruner.cell_bias.copy_(torch.where(schedule, INTERVAL_INIT_MARGIN, -INTERVAL_INIT_MARGIN))
            if pruner.step_bias is not None:  # hierarchical: every block would run; the skipped steps hold
                pruner.cell_bias.fill_(-INTERVAL_INIT_MARGIN)
                pruner.step_bias.copy_(torch.where(schedule.all(-1), 2 * INTERVAL_INIT_MARGIN, 0.0))
        return pruner
    if cfg.init_from is None:
        return Pruner(pruner_config_for(policy, cfg))
    pruner, _ = load_pruner(Path(cfg.init_from), policy, transfer=cfg.init_transfer)
    if pruner.config.granularity != cfg.granularity:
        raise CheckpointError(f"{cfg.init_from} decides per {pruner.config.granularity}; this run per {cfg.granularity}")
    if pruner.config.use_observation == cfg.use_observation:
        return pruner
    if pruner.config.use_observation:
        raise CheckpointError(f"{cfg.init_from} is an observation-conditioned pruner; a static one cannot start from it")
    # SAG from a learned static mask: same weights (a static pruner carries an unused observation branch), the
    # observation branch's output at zero, so training starts at the static mask for every observation and its
    # fidelity gradient only adds what the observation explains.
    observed = Pruner(replace(pruner.config, use_observation=True))
    observed.load_state_dict(pruner.state_dict())
    with torch.no_grad():
        observed.obs_proj[-1].weight.zero_()
    return observed


def train_pruner(policy: DiffusionPolicy, cfg: PrunerTrainConfig, sampler: WindowSampler, out_path: Path,
                 device: torch.device = torch.device("cpu"), deadline: Deadline | None = None) -> Pruner:
    """Train (or resume) a pruner for ``policy`` (frozen; its sampler is set to ``cfg.noise_scale``) on ``device``;
    saves ``out_path`` atomically every few steps and, once ``deadline`` has passed, stops at a checkpoint."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    deadline = deadline or Deadline(None)
    policy.eval().requires_grad_(False).to(device)
    policy.use_noise_scale(cfg.noise_scale)
    pruner = initial_pruner(policy, cfg).to(device).train()
    offsets = {"cell_bias", "step_bias"}  # per-cell / per-step offsets learn at the fast rate
    network = [p for name, p in pruner.named_parameters() if name not in offsets]
    fast = [p for name, p in pruner.named_parameters() if name in offsets]
    optimizer = torch.optim.AdamW([{"params": network, "lr": cfg.lr}, {"params": fast, "lr": cfg.cell_lr}],
                                  weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, 0, cfg.num_steps))
    generator = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        sample_obs, _ = sampler.sample(cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
        block_gates, holds = pruner.gates_and_holds(policy.encode_observation(batch_to(sample_obs, device)))
        start_rate = pruned_cost(held_mask(block_gates, holds), cfg.step_cost, holds).item()
    state_path, signature, step = train_state_path(out_path), _resume_signature(policy, cfg), 0
    if state_path.exists():
        state = load_artifact(state_path, TRAIN_STATE_FORMAT, TRAIN_STATE_VERSION)
        if state["signature"] != signature:
            raise CheckpointError(f"{state_path}: written by a run with other settings or another policy "
                                  f"({state['signature']} != {signature}); delete it to start afresh")
        pruner.load_state_dict(state["pruner"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["lr_schedule"])
        generator.set_state(state["generator"])
        step, start_rate = int(state["step"]), float(state["start_rate"])
        print(f"resumed from {state_path} at iteration {step}")

    def checkpoint(stats: dict[str, float]) -> None:
        save_pruner(pruner.eval(), policy, out_path, extra={
            "train_step": step, "target_rate": cfg.target_rate, "reuse": cfg.reuse.value, "hold_x0": cfg.hold_x0,
            "step_cost": cfg.step_cost, "noise_scale": cfg.noise_scale, "use_observation": cfg.use_observation,
            "reference": cfg.reference,
            "fidelity_window": cfg.fidelity_window, "fidelity_steps": cfg.fidelity_steps, "init_from": cfg.init_from,
            "init_interval": cfg.init_interval, "init_interval_start": cfg.init_interval_start,
            "last_fidelity": stats["fidelity"], "last_prune_rate": stats["prune_rate"]})
        atomic_torch_save({"format": TRAIN_STATE_FORMAT, "version": TRAIN_STATE_VERSION, "signature": signature,
                           "step": step, "start_rate": start_rate, "pruner": pruner.state_dict(),
                           "optimizer": optimizer.state_dict(), "lr_schedule": schedule.state_dict(),
                           "generator": generator.get_state()}, state_path)
        pruner.train()

    start = time.perf_counter()
    bar = tqdm(total=cfg.num_steps, initial=step, desc=f"train-pruner rho={cfg.target_rate}", dynamic_ncols=True)
    stats: dict[str, float] = {}
    while step < cfg.num_steps:
        obs, action = sampler.sample(cfg.batch_size, generator)
        with torch.no_grad():
            features = policy.encode_observation(batch_to(obs, device))
            target = policy.normalizer["action"].normalize(action.to(device)) if cfg.reference == "demo" else None
        loss, stats = pruner_loss(policy, pruner, features, target, cfg, generator,
                                  target_rate_at(step, start_rate, cfg))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        bar.update(1)
        bar.set_postfix(l1=f"{stats['fidelity']:.4f}", rate=f"{stats['prune_rate']:.3f}")
        out_of_time = step < cfg.num_steps and deadline.passed()
        if step % cfg.checkpoint_every == 0 or step == cfg.num_steps or out_of_time:
            checkpoint(stats)
        if out_of_time:
            break
    bar.close()
    if step < cfg.num_steps:
        print(deadline.stop_note(step, cfg.num_steps))
    print(f"pruner trained to iteration {step} in {time.perf_counter() - start:.0f} s on {device}: {out_path}")
    return pruner.eval()


"""``sag_inference``: the newest observation -> an action chunk on ``/sag/actions``, at ``control_rate_hz``.

What starts a chunk (``trigger``): ``frame`` (the default), the arrival of a new observation, at most
``control_rate_hz`` on average (:class:`~sag_ros.nodes.loop_timing.FrameGate`), so each chunk starts from a frame a
few ms old; or ``timer``, a fixed-rate timer, whose phase against the camera's decides how old the frame is (up to a
camera period: with the sim at the control rate, closed-loop scores then changed from run to run). The decision runs
on the executor thread (the timer's or the subscription's): no observation, or one older than ``stale_timeout_s``,
means nothing is published and ``/diagnostics`` reports ERROR (stale data is never acted on); a worker still busy
with the previous chunk counts an overrun (never queued; in ``frame`` mode the next frame tries again); otherwise
the observation goes to the worker thread, which runs the :class:`~sag_ros.predictor.PolicyPredictor` and publishes
a ``JointTrajectory`` stamped against the observation stamp, its points spaced at the rate the policy's actions were
demonstrated at (``action_rate_hz``, by default its task's: Meta-World's 80 Hz, not the 10 Hz chunk rate), every
predicted action from the observation's step on unless ``actions_per_chunk`` says fewer: the ~20 ms a chunk takes to
compute make its first actions due before it arrives, and its later ones keep the robot moving until the next chunk
replaces them. Chunks with NaN/inf or out-of-range actions are not published.
``~/enable`` (``std_srvs/SetBool``) pauses and resumes publishing with the model kept loaded and warm (an operator's
pause that costs no restart); ``start_enabled: false`` starts paused.

Per chunk: ``/sag/latency/{total_ms,plan_ms,denoise_ms,obs_age_ms}`` and ``/sag/executed_fraction``
(``std_msgs/Float64``); ``/sag/mask``: the chunk's SAG pruning mask (:func:`mask_to_msg`), only while someone
subscribes and the planner has a mask (dense planners have none); every ``diagnostics_period_s``:
``diagnostic_msgs/DiagnosticArray`` on ``/diagnostics`` with p50/p95/p99 against the control period, deadline
misses, overruns and the achieved rate.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, UInt8MultiArray
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from sag_ros.latency import Level, RateMeter, SampleWindow, classify, summarize
from sag_ros.nodes.camera_node import ObservationBuffer
from sag_ros.nodes.convert import (chunk_to_trajectory, fit_square, image_to_array, joint_state_to_array, mask_to_msg,
                                   stamp_to_ns)
from sag_ros.nodes.graph import (ACTIONS_TOPIC, DIAGNOSTICS_TOPIC, ENABLE_SERVICE, FRACTION_TOPIC, LATENCY_SERIES,
                                 LATENCY_TOPIC, MASK_TOPIC, OBS_IMAGE_TOPIC, OBS_STATE_TOPIC)
from sag_ros.nodes.lifecycle import NodeStartupError, run_node
from sag_ros.nodes.loop_timing import FrameGate
from sag_ros.nodes.params import HOLD_X0_CHOICES, ConfigParameters, InferenceNodeConfig

_PAIRING_DEPTH = 8  # unmatched images/states kept per kind while waiting for their other half


def clamp_to_bounds(actions: np.ndarray, low: np.ndarray, high: np.ndarray, margin: float) -> np.ndarray | None:
    """Actions clamped to [low, high], or None when any is not finite or beyond the bounds by more than ``margin``
    times the range. DDPM's last step mixes the clipped clean sample with the noisy one, so a chunk near a
    workspace edge overshoots it by a little (a few pixels of Push-T's 512); that is clamped like a joint limit,
    while an action far outside is a fault, and a faulty chunk is not sent to the robot at all."""
    slack = margin * (high - low)
    if not np.isfinite(actions).all() or (actions < low - slack).any() or (actions > high + slack).any():
        return None
    return np.clip(actions, low, high)


def observation_age_problem(age_s: float, stale_timeout_s: float) -> str | None:
    """Why an observation ``age_s`` old must not be acted on, or None.

    Too old is stale. Stamped more than ``stale_timeout_s`` in the future means the camera's clock and this node's
    disagree (another machine's clock, or ``use_sim_time`` with no ``/clock``, where now is 0): ages measured
    against such a clock say nothing, and a camera that stopped would never look stale, so that is refused too.
    """
    if age_s > stale_timeout_s:
        return f"newest observation is {age_s * 1e3:.0f} ms old (stale after {stale_timeout_s * 1e3:.0f} ms): not acting"
    if age_s < -stale_timeout_s:
        return (f"newest observation is stamped {-age_s * 1e3:.0f} ms in the future (more than "
                f"{stale_timeout_s * 1e3:.0f} ms): the camera's clock and this node's disagree; not acting")
    return None


class ModelLoadError(NodeStartupError):
    """The policy file is missing, unreadable, or does not fit this node's parameters."""


def task_control_rate(task: str) -> float:
    """The control rate of the task a policy was trained on: the rate its demonstrations' actions follow."""
    from sag_ros.sim.task import get_task

    try:
        return get_task(task).control_hz
    except ValueError as exc:
        raise ModelLoadError(f"sag_inference: the policy's task is not known here ({exc}); set action_rate_hz to the "
                             f"rate its demonstrations were recorded at") from None


def load_predictor(cfg: InferenceNodeConfig):
    """Build the predictor named by the parameters, failing with a message that says what to fix."""
    from sag_ros.engine.base import MissingDependencyError
    from sag_ros.policy.checkpoint import CheckpointError
    from sag_ros.predictor import PredictorSpec
    from sag_ros.resources import default_policy_path

    path = Path(cfg.model_path) if cfg.model_path else default_policy_path()
    if not path.is_file():
        raise ModelLoadError(f"sag_inference: model file {path} does not exist; set the 'model_path' parameter "
                           f"(or train/ship the default policy)")
    try:
        return PredictorSpec(str(path), sampler=cfg.sampler or None, num_steps=cfg.num_steps or None,
                             noise_scale=cfg.noise_scale, pruner_path=cfg.pruner_path or None,
                             interval=cfg.interval or None, interval_start=cfg.interval_start,
                             hold_x0=HOLD_X0_CHOICES[cfg.hold_x0], backend=cfg.backend,
                             engine_cache=cfg.engine_cache or None, threads=cfg.threads)()
    except MissingDependencyError as exc:
        raise ModelLoadError(f"sag_inference: backend {cfg.backend!r}: {exc}; or set the 'backend' parameter to "
                             f"'eager'") from exc
    except OSError as exc:  # besides the model, the folder of compiled blocks (read-only image, no permission)
        elsewhere = exc.filename is not None and Path(exc.filename) != path
        hint = "; set the 'engine_cache' parameter to a writable folder" if elsewhere else ""
        raise ModelLoadError(f"sag_inference: cannot load {path}: {exc}{hint}") from exc
    except (CheckpointError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"sag_inference: cannot load {path}: {exc}") from exc


@dataclass
class ChunkStats:
    """Latency windows of the inference loop (seconds); shared by the worker and the diagnostics timer."""

    total: SampleWindow
    plan: SampleWindow
    denoise: SampleWindow
    obs_age: SampleWindow
    fraction: SampleWindow
    rate: RateMeter

    @classmethod
    def create(cls, window: int) -> "ChunkStats":
        return cls(*(SampleWindow(window) for _ in range(5)), RateMeter(window))


GIL_SWITCH_INTERVAL_S = 0.0005


def shorten_gil_switch_interval(seconds: float = GIL_SWITCH_INTERVAL_S) -> None:
    """Let the worker thread take the GIL back within ``seconds`` (Python's default: 5 ms); never lengthens it.

    A chunk is thousands of small torch calls, each releasing the GIL and waiting to get it back. With the
    executor's threads running Python callbacks (other nodes of the same process, subscriptions), each wait could
    last the whole default interval: in a one-process graph a tiny policy's 6 ms chunk took up to 1 s, and
    `sag-bringup` measured chunks ~3x slower than `sag bench`. This is process-wide, as the GIL is.
    """
    if sys.getswitchinterval() > seconds:
        sys.setswitchinterval(seconds)


class InferenceNode(Node):
    def __init__(self, observations: ObservationBuffer | None = None, predictor=None, *,
                 name: str = "sag_inference", **node_kwargs) -> None:
        super().__init__(name, **node_kwargs)
        self.params = ConfigParameters(self, InferenceNodeConfig)
        cfg = self.params.config
        self.predictor = predictor if predictor is not None else load_predictor(cfg)
        policy_cfg = self.predictor.policy.config
        if "image" not in self.predictor.policy.obs_keys:
            raise ModelLoadError("sag_inference: this node feeds image policies; the checkpoint reads "
                               f"{list(self.predictor.policy.obs_keys)}")
        if policy_cfg.denoiser.action_dim != len(cfg.joint_names):
            raise ModelLoadError(f"sag_inference: the policy outputs {policy_cfg.denoiser.action_dim}-d actions but "
                               f"joint_names has {len(cfg.joint_names)} entries")
        try:
            self.actions_per_chunk = self.predictor.chunk_length(cfg.actions_per_chunk)
        except ValueError as exc:
            raise ModelLoadError(f"sag_inference: {exc}") from None
        self.action_rate_hz = cfg.action_rate_hz or task_control_rate(policy_cfg.task)
        enc, to = policy_cfg.encoder, policy_cfg.denoiser.n_obs_steps
        if observations is None:
            observations = ObservationBuffer(to, enc.image_size, enc.state_dim)
            self._pending: dict[str, dict[int, np.ndarray]] = {"image": {}, "state": {}}
            self.create_subscription(Image, OBS_IMAGE_TOPIC, self._on_image, 1)
            self.create_subscription(JointState, OBS_STATE_TOPIC, self._on_state, 1)
        elif (observations.n_obs_steps, observations.image_size, observations.state_dim) != (to, enc.image_size, enc.state_dim):
            raise ModelLoadError(f"sag_inference: the observation buffer holds To={observations.n_obs_steps}, "
                               f"{observations.image_size}px, state {observations.state_dim}; the policy needs "
                               f"To={to}, {enc.image_size}px, state {enc.state_dim}")
        self.observations = observations
        # Warm-up: the first forward pass allocates and is slow; do it before the clock starts.
        self.predictor({"image": np.zeros((to, enc.image_size, enc.image_size, 3), np.uint8),
                        "state": np.zeros((to, enc.state_dim), np.float32)}, seed=0)
        self._lo, self._hi = np.asarray(cfg.action_min), np.asarray(cfg.action_max)

        self.stats = ChunkStats.create(cfg.stats_window)
        self.chunks = self.overruns = self.stale_ticks = self.refused = self.failures = 0
        self._attempts = 0  # seeds the sampling noise: a refused chunk is never redrawn with the same noise
        self._problem: str | None = "no observation received yet"
        self._enabled = cfg.start_enabled
        self._lock = threading.Lock()

        self._actions_pub = self.create_publisher(JointTrajectory, ACTIONS_TOPIC, 1)
        self._latency_pubs = {k: self.create_publisher(Float64, LATENCY_TOPIC.format(k), 10) for k in LATENCY_SERIES}
        self._fraction_pub = self.create_publisher(Float64, FRACTION_TOPIC, 10)
        self._mask_pub = self.create_publisher(UInt8MultiArray, MASK_TOPIC, 1)
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.create_service(SetBool, f"~/{ENABLE_SERVICE}", self._on_enable)

        self._job: tuple[int, dict[str, np.ndarray], int] | None = None
        self._busy = False
        self._stopping = False
        self._wake = threading.Condition()
        shorten_gil_switch_interval()
        self._worker = threading.Thread(target=self._work, name=f"{name}_worker", daemon=True)
        self._worker.start()
        self._gate = FrameGate(cfg.period_s)
        if cfg.trigger == "frame":
            self.observations.add_listener(self._on_frame)
        self.create_timer(cfg.period_s, self._on_tick)
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)
        schedule = self.predictor.policy.schedule
        self.get_logger().info(f"policy ready: To={to}, {enc.image_size}px, {schedule.kind.value} x {schedule.num_steps} "
                               f"steps, {type(self.predictor.planner).__name__} (held steps "
                               f"{'on' if self.predictor.planner.hold_x0 else 'off'}), "
                               f"{cfg.backend} blocks, {cfg.control_rate_hz} Hz on {cfg.trigger} ticks, "
                               f"{self.actions_per_chunk} actions a chunk at {self.action_rate_hz:g} Hz"
                               + ("" if self._enabled else f"; paused until {self.enable_service} is called"))

    @property
    def enable_service(self) -> str:
        """The pause / resume service's full name (with the node's namespace), as an operator types it."""
        return self.resolve_service_name(f"~/{ENABLE_SERVICE}")

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._lock:
            changed, self._enabled = self._enabled != request.data, request.data
        response.success = True
        response.message = "publishing chunks" if request.data else "paused: no chunks are published"
        if changed:
            self.get_logger().info(f"{self.enable_service}: {response.message}")
        return response

    # -- observations from topics (separate processes) ------------------------------------------------------

    def _on_image(self, msg: Image) -> None:
        try:
            rgb = fit_square(image_to_array(msg), self.observations.image_size)
        except ValueError as exc:
            self.get_logger().warning(f"observation image dropped: {exc}", throttle_duration_sec=2.0)
            return
        self._pair("image", stamp_to_ns(msg.header.stamp), rgb)

    def _on_state(self, msg: JointState) -> None:
        try:
            state = joint_state_to_array(msg, self.observations.state_dim)
        except ValueError as exc:
            self.get_logger().warning(f"observation state dropped: {exc}", throttle_duration_sec=2.0)
            return
        self._pair("state", stamp_to_ns(msg.header.stamp), state)

    def _pair(self, key: str, stamp_ns: int, value: np.ndarray) -> None:
        """Join image and state by stamp; either may arrive first, and a few may be in flight at once."""
        other = self._pending["state" if key == "image" else "image"]
        if stamp_ns not in other:
            mine = self._pending[key]
            mine[stamp_ns] = value
            if len(mine) > _PAIRING_DEPTH:
                mine.pop(next(iter(mine)))
                self.get_logger().warning(
                    f"{_PAIRING_DEPTH} {key}s wait for a {'state' if key == 'image' else 'image'} with the same "
                    f"stamp: images on {OBS_IMAGE_TOPIC} and states on {OBS_STATE_TOPIC} must carry equal header "
                    f"stamps (sag_camera stamps both with the frame's)", throttle_duration_sec=5.0)
            return
        image, state = (value, other[stamp_ns]) if key == "image" else (other[stamp_ns], value)
        self.observations.push(stamp_ns, image, state)
        for pending in self._pending.values():  # older halves can no longer make a newer observation
            for stamp in [t for t in pending if t <= stamp_ns]:
                del pending[stamp]

    # -- control loop --------------------------------------------------------------------------------------

    def _on_tick(self) -> None:
        """Timer: start a chunk in ``timer`` mode; in ``frame`` mode only notice a camera that went silent."""
        usable = self._usable_observation()
        if usable is not None and self.params.config.trigger == "timer":
            self._start_chunk(*usable)

    def _on_frame(self, stamp_ns: int) -> None:
        """A new observation was kept (``frame`` mode): start a chunk from it when one is due (:class:`FrameGate`)."""
        self._gate.admit(stamp_ns, self._start_from_newest)

    def _start_from_newest(self) -> bool:
        usable = self._usable_observation()
        return usable is not None and self._start_chunk(*usable)

    def _usable_observation(self) -> tuple[int, dict[str, np.ndarray], int] | None:
        """(stamp, observation, now) of the newest observation, or None (the problem recorded) when there is none
        or it must not be acted on."""
        now_ns = self.get_clock().now().nanoseconds
        latest = self.observations.latest()
        if latest is None:
            self._set_problem("no observation received yet")
            return None
        stamp_ns, obs = latest
        problem = observation_age_problem((now_ns - stamp_ns) * 1e-9, self.params.config.stale_timeout_s)
        if problem is not None:
            with self._lock:
                self.stale_ticks += 1
            self._set_problem(problem)
            return None
        self._set_problem(None)
        return stamp_ns, obs, now_ns

    def _start_chunk(self, stamp_ns: int, obs: dict[str, np.ndarray], now_ns: int) -> bool:
        """Hand the observation to the worker, or count an overrun while it is still busy (never queued); whether
        a chunk started."""
        if not self._enabled:
            return False
        with self._wake:
            if self._busy:
                with self._lock:
                    self.overruns += 1
                return False
            self._busy = True
            self._job = (stamp_ns, obs, now_ns)
            self._wake.notify()
        return True

    def _set_problem(self, problem: str | None) -> None:
        with self._lock:
            self._problem = problem

    def _work(self) -> None:
        while True:
            with self._wake:
                while self._job is None and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                job, self._job = self._job, None
            try:
                self._run_chunk(*job)
            except Exception as exc:  # never let the worker die silently: the timer would count overruns forever
                with self._lock:
                    self.failures += 1
                    self._problem = f"inference worker error: {exc!r}"
                self.get_logger().error(f"inference worker error: {exc!r}", throttle_duration_sec=2.0)
            finally:
                with self._wake:
                    self._busy = False

    def _run_chunk(self, stamp_ns: int, obs: dict[str, np.ndarray], tick_ns: int) -> None:
        cfg = self.params.config
        obs_age_s = max(0.0, (tick_ns - stamp_ns) * 1e-9)
        t0 = time.perf_counter()
        try:
            self._attempts += 1
            actions = self.predictor(obs, seed=cfg.seed + self._attempts, num_actions=self.actions_per_chunk)
        except (ValueError, FloatingPointError, RuntimeError) as exc:
            with self._lock:
                self.failures += 1
                self._problem = f"inference failed: {exc}"
            self.get_logger().error(f"inference failed: {exc}", throttle_duration_sec=2.0)
            return
        total_s = time.perf_counter() - t0
        timing = self.predictor.last_timing
        bounded = clamp_to_bounds(actions, self._lo, self._hi, cfg.action_margin)
        if bounded is None:
            with self._lock:
                self.refused += 1
            self.get_logger().error(f"chunk refused: actions not finite or more than {cfg.action_margin:.0%} of the "
                                    f"range outside [{cfg.action_min}, {cfg.action_max}]: {actions.tolist()}",
                                    throttle_duration_sec=2.0)
            return
        actions = bounded
        if self._stopping or not self._enabled:  # paused while this chunk was computed: it is not sent
            return
        values = {"total_ms": total_s, "plan_ms": timing.plan_s, "denoise_ms": timing.denoise_s,
                  "obs_age_ms": obs_age_s}
        try:
            self._actions_pub.publish(chunk_to_trajectory(actions, stamp_ns, self.action_rate_hz, cfg.joint_names,
                                                          cfg.frame_id, cfg.execution_offset_s))
            for key, seconds in values.items():
                self._latency_pubs[key].publish(Float64(data=seconds * 1e3))
            self._fraction_pub.publish(Float64(data=float(timing.executed_fraction)))
            self._publish_mask()
        except Exception:  # the context was shut down (SIGINT) while this chunk was computed
            if self.context.ok() and not self._stopping:
                raise
            return
        with self._lock:
            self.chunks += 1
            self.stats.total.add(total_s)
            self.stats.plan.add(timing.plan_s)
            self.stats.denoise.add(timing.denoise_s)
            self.stats.obs_age.add(obs_age_s)
            self.stats.fraction.add(timing.executed_fraction)
            self.stats.rate.tick(time.monotonic())

    def _publish_mask(self) -> None:
        """The last chunk's mask, packed and published only while someone subscribes."""
        if self._mask_pub.get_subscription_count() == 0:
            return
        mask = getattr(self.predictor.planner, "last_mask", None)
        if mask is not None:
            self._mask_pub.publish(mask_to_msg(np.asarray(mask, dtype=bool)))

    # -- health --------------------------------------------------------------------------------------------

    def health(self) -> tuple[Level, str, dict[str, float]]:
        """(level, message, values) of the loop now: ERROR on stale/missing data or failures, else stats."""
        cfg = self.params.config
        with self._lock:
            summary = summarize(self.stats.total, cfg.period_s)
            rate = self.stats.rate.rate(time.monotonic())
            problem = self._problem
            values = {
                "p50_ms": summary.p50 * 1e3, "p95_ms": summary.p95 * 1e3, "p99_ms": summary.p99 * 1e3,
                "max_ms": summary.max * 1e3, "period_ms": cfg.period_s * 1e3, "window": summary.count,
                "deadline_misses": summary.deadline_misses, "overruns": self.overruns, "chunks": self.chunks,
                "stale_ticks": self.stale_ticks, "refused_chunks": self.refused, "failures": self.failures,
                "achieved_rate_hz": rate, "target_rate_hz": cfg.control_rate_hz,
                "obs_age_p50_ms": self.stats.obs_age.percentile(50) * 1e3,
                "plan_p50_ms": self.stats.plan.percentile(50) * 1e3,
                "denoise_p50_ms": self.stats.denoise.percentile(50) * 1e3,
                "executed_fraction_mean": float(np.mean(self.stats.fraction.values())) if len(self.stats.fraction) else float("nan"),
            }
        if problem is not None:
            return Level.ERROR, problem, values
        if not self._enabled:
            return Level.WARN, f"paused: no chunks are published until {self.enable_service} is set true", values
        level, message = classify(summary, rate, cfg.control_rate_hz)
        return level, message, values

    def _publish_diagnostics(self) -> None:
        level, message, values = self.health()
        # the node's full name: two robots' graphs in their own namespaces publish on the one /diagnostics
        status = DiagnosticStatus(level=bytes([int(level)]), name=f"{self.get_fully_qualified_name()}: inference loop",
                                  message=message, hardware_id="sag_ros",
                                  values=[KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v))
                                          for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def destroy_node(self) -> None:
        if self.params.config.trigger == "frame":
            self.observations.remove_listener(self._on_frame)
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join()
        super().destroy_node()


def main(args=None) -> None:
    run_node(InferenceNode, args=args)


if __name__ == "__main__":
    main()

"""Scripted Push-T expert: a sampling planner over a private copy of the simulator.

Why a planner and not a hand-written controller: Push-T dynamics are quasi-static (zero
damping zeroes velocities every substep, so the T moves only while pushed) and the success
rule is tight (coverage > 0.95 is about 2.5 px or 2.5 deg), so predicting each push in a
forward model and picking the best one is both simple and precise.

Each plan samples contact points on the T outline x push directions around the inward
normal x push lengths scaled to the current keypoint error, simulates each push from a
standoff point, and keeps the one with the lowest mean keypoint distance to the goal. The
agent then reaches the standoff point along a path that goes around the T, and pushes.
Everything is deterministic given the env seed.

Measured (final code, seeds 0..49, 2 spawn workers): 50/50 successes, mean 137 steps
(max 222 of 300), ~1.3-2 s CPU per episode. The top few pushes are re-simulated as executed
(approach included, from the true agent state) because a push-only ranking alone stalled at
coverage 0.94-0.95 on some seeds.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from sag_ros.sim.pusht import AGENT_RADIUS, GOAL_KEYPOINTS, T_RECTS, block_keypoints, place_body

_T_OUTLINE = np.array(
    [[-60, 0], [60, 0], [60, 30], [15, 30], [15, 120], [-15, 120], [-15, 30], [-60, 30]], dtype=np.float64
)
"""Counter-clockwise-in-screen-order outline of the T in block-local coordinates."""
_KERNEL = np.array([0.0, 30.0])
"""A point from which the whole T is visible (star centre): radial paths from it never re-enter."""
_KERNEL_REACH = float(np.max(np.linalg.norm(_T_OUTLINE - _KERNEL, axis=1)))


def _rot(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def keypoint_error(pose: np.ndarray) -> float:
    """Mean distance (px) between the T's keypoints at ``pose`` and at the goal."""
    return float(np.mean(np.linalg.norm(block_keypoints(pose) - GOAL_KEYPOINTS, axis=1)))


def _outline_contacts(count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` points evenly spaced along the T outline, with outward unit normals (local frame)."""
    starts, ends = _T_OUTLINE, np.roll(_T_OUTLINE, -1, axis=0)
    lengths = np.linalg.norm(ends - starts, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(lengths)])
    points, normals = [], []
    for arc in (np.arange(count) + 0.5) * cum[-1] / count:
        i = int(np.searchsorted(cum, arc, side="right") - 1)
        t = (arc - cum[i]) / lengths[i]
        edge = (ends[i] - starts[i]) / lengths[i]
        points.append(starts[i] + t * (ends[i] - starts[i]))
        normals.append(np.array([edge[1], -edge[0]]))
    points_arr, normals_arr = np.array(points), np.array(normals)
    # Orientation check: the outward normal must point away from the T.
    probe = _clearance_local(points_arr + 2.0 * normals_arr)
    normals_arr[probe <= 0.0] *= -1.0
    return points_arr, normals_arr


def _clearance_local(points: np.ndarray) -> np.ndarray:
    """Distance from local-frame points [N, 2] to the T (0 inside)."""
    dists = []
    for cx, cy, hw, hh in T_RECTS:
        q = np.abs(points - (cx, cy)) - (hw, hh)
        dists.append(np.linalg.norm(np.maximum(q, 0.0), axis=1))
    return np.minimum(*dists)


def _to_local(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    return (np.atleast_2d(points) - pose[:2]) @ _rot(pose[2])


def _densify(points: list[np.ndarray], max_step: float) -> list[np.ndarray]:
    """Waypoints along a polyline, at most ``max_step`` apart, excluding the first point."""
    out: list[np.ndarray] = []
    for a, b in zip(points[:-1], points[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / max_step)))
        out.extend(a + (b - a) * k / n for k in range(1, n + 1))
    return out


class _ForwardModel:
    """A private gym-pusht physics space stepped with the env's own PD law, minus rewards/rendering."""

    def __init__(self) -> None:
        from gym_pusht.envs.pusht import PushTEnv

        self._env = PushTEnv(obs_type="state")
        self._env.reset(seed=0)

    def simulate(
        self,
        agent_xy: np.ndarray,
        pose: np.ndarray,
        waypoints: list[np.ndarray],
        agent_velocity: tuple[float, float] = (0.0, 0.0),
    ) -> np.ndarray:
        """Final block pose after the agent tracks ``waypoints`` from ``agent_xy`` (at rest by default)."""
        env = self._env
        agent, block, space = env.agent, env.block, env.space
        place_body(agent, agent_xy[0], agent_xy[1])
        agent.velocity = (float(agent_velocity[0]), float(agent_velocity[1]))
        place_body(block, pose[0], pose[1], pose[2])
        block.velocity = (0.0, 0.0)
        block.angular_velocity = 0.0
        space.reindex_shapes_for_body(agent)
        space.reindex_shapes_for_body(block)
        kp, kv, dt = env.k_p, env.k_v, env.dt
        substeps = int(1 / (dt * env.control_hz))
        for wp in waypoints:
            tx, ty = float(wp[0]), float(wp[1])
            for _ in range(substeps):
                px, py = agent.position
                vx, vy = agent.velocity
                agent.velocity = (vx + (kp * (tx - px) - kv * vx) * dt, vy + (kp * (ty - py) - kv * vy) * dt)
                space.step(dt)
        return np.array([*block.position, block.angle])

    def agent_velocity_after(
        self, agent_xy: np.ndarray, velocity: tuple[float, float], action: np.ndarray
    ) -> tuple[float, float]:
        """Agent velocity after one control step towards ``action`` (block-independent: kinematic agent)."""
        env = self._env
        kp, kv, dt = env.k_p, env.k_v, env.dt
        px, py = float(agent_xy[0]), float(agent_xy[1])
        vx, vy = velocity
        tx, ty = float(action[0]), float(action[1])
        for _ in range(int(1 / (dt * env.control_hz))):
            vx, vy = vx + (kp * (tx - px) - kv * vx) * dt, vy + (kp * (ty - py) - kv * vy) * dt
            px, py = px + vx * dt, py + vy * dt
        return vx, vy

    def coverage(self) -> float:
        """Goal coverage of the block after the last :meth:`simulate` (the env's own metric)."""
        return float(self._env._get_coverage())


class PushTExpert:
    """Push-T planner expert (see the module docstring). Actions are absolute target positions."""

    def __init__(
        self,
        contacts: int = 36,
        push_angles: tuple[float, ...] = (-0.5, -0.25, 0.0, 0.25, 0.5),
        length_factors: tuple[float, ...] = (0.35, 0.7, 1.2),
        push_speed: float = 10.0,
        approach_speed: float = 25.0,
        standoff_gap: float = 8.0,
        margin: float = 6.0,
        settle: int = 2,
        fine_error: float = 10.0,
        verify: int = 8,
    ) -> None:
        self._points, self._normals = _outline_contacts(contacts)
        self._angles = push_angles
        self._length_factors = length_factors
        self._push_speed = push_speed
        self._approach_speed = approach_speed
        self._gap = standoff_gap
        self._margin = margin
        self._settle = settle
        self._fine_error = fine_error
        self._verify = verify
        self._model: _ForwardModel | None = None
        self._queue: deque[np.ndarray] = deque()
        self._velocity: tuple[float, float] = (0.0, 0.0)
        """The agent's velocity is not in ``sim_state``; the kinematic agent ignores contacts, so
        replaying the PD law on our own actions tracks it and lets plans start from the true state."""

    def reset(self, adapter) -> None:
        # A fresh model per episode: pymunk caches contacts, so reusing one would make an
        # episode depend on the episodes before it.
        self._model = _ForwardModel()
        self._queue.clear()
        self._velocity = (0.0, 0.0)

    def act(self, adapter) -> np.ndarray:
        sim_state = adapter.sim_state()
        if not self._queue:
            self._queue.extend(self._plan(sim_state))
        action = np.asarray(self._queue.popleft(), dtype=np.float64)
        self._velocity = self._model.agent_velocity_after(sim_state[:2], self._velocity, action)
        return action

    def _plan(self, sim_state: np.ndarray) -> list[np.ndarray]:
        """Waypoints of the best simulated push: approach, settle at standoff, push."""
        assert self._model is not None, "reset() must be called first"
        agent, pose = sim_state[:2].copy(), sim_state[2:5].copy()
        error = keypoint_error(pose)
        lengths = [float(np.clip(f * error, 1.0, 80.0)) for f in self._length_factors]
        fine = error < self._fine_error
        rot = _rot(pose[2])
        candidates: list[tuple[float, int, np.ndarray, list[np.ndarray]]] = []
        for p_local, n_local in zip(self._points, self._normals):
            p, n = rot @ p_local + pose[:2], rot @ n_local
            contact = p + n * (AGENT_RADIUS + 0.5)
            for angle in self._angles:
                d = _rot(angle) @ -n
                start = contact - d * self._gap
                if not np.all((start > 10.0) & (start < 502.0)):
                    continue
                if _clearance_local(_to_local(start, pose))[0] < AGENT_RADIUS + 2.0:
                    continue
                for length in lengths:
                    push = _densify([start, contact + d * length], self._push_speed)
                    push.extend([push[-1]] * self._settle)
                    final = self._model.simulate(start, pose, push)
                    candidates.append((self._score(final, fine), len(candidates), start, push))
        if not candidates:  # boxed in (e.g. against a wall): back off towards the centre and replan
            return [np.array([256.0, 256.0])]
        # The push-only ranking assumes the agent starts at rest at the standoff point; re-simulate
        # the best few as executed (approach included, from the true agent state) and keep the best.
        best: tuple[float, list[np.ndarray]] | None = None
        for _, _, start, push in sorted(candidates, key=lambda c: (c[0], c[1]))[: self._verify]:
            plan = self._approach(agent, start, pose) + [start] * self._settle + push
            final = self._model.simulate(agent, pose, plan, self._velocity)
            score = self._score(final, fine)
            if best is None or score < best[0]:
                best = (score, plan)
        assert best is not None
        return best[1]

    def _score(self, final_pose: np.ndarray, fine: bool) -> float:
        """Lower is better: keypoint error far from the goal, the env's own coverage metric near it."""
        assert self._model is not None
        return 1.0 - self._model.coverage() if fine else keypoint_error(final_pose)

    def _approach(self, agent: np.ndarray, target: np.ndarray, pose: np.ndarray) -> list[np.ndarray]:
        """Collision-free waypoints from ``agent`` to ``target``: straight if clear, else around the T."""
        safe = AGENT_RADIUS + self._margin
        n = max(2, int(np.ceil(np.linalg.norm(target - agent) / 3.0)))
        segment = agent + (target - agent) * np.linspace(0.0, 1.0, n)[:, None]
        if np.all(_clearance_local(_to_local(segment, pose)) > safe):
            return _densify([agent, target], self._approach_speed)
        centre = _rot(pose[2]) @ _KERNEL + pose[:2]
        radius = _KERNEL_REACH + safe

        def out(point: np.ndarray) -> tuple[np.ndarray, float]:
            offset = point - centre
            dist = float(np.linalg.norm(offset))
            direction = offset / dist if dist > 1e-9 else np.array([1.0, 0.0])
            return centre + direction * max(radius, dist), float(np.arctan2(direction[1], direction[0]))

        agent_out, a0 = out(agent)
        target_out, a1 = out(target)
        sweep = (a1 - a0 + np.pi) % (2 * np.pi) - np.pi
        candidates = [sweep, sweep - np.sign(sweep) * 2 * np.pi] if sweep != 0 else [0.0]
        best_path: list[np.ndarray] | None = None
        best_cost = np.inf
        for total in candidates:
            steps = max(1, int(np.ceil(abs(total) * radius / self._approach_speed)))
            arc = [centre + radius * np.array([np.cos(a), np.sin(a)]) for a in a0 + total * np.arange(1, steps) / steps]
            path = [agent, agent_out, *arc, target_out, target]
            outside = sum(int(np.any((q < 0.0) | (q > 512.0))) for q in arc)
            cost = outside * 1e4 + abs(total)
            if cost < best_cost:
                best_cost, best_path = cost, path
        assert best_path is not None
        return _densify(best_path, self._approach_speed)

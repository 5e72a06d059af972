"""rclpy subscriptions that feed a :class:`~sag_ros.dashboard.model.DashboardModel`; no Qt.

The subscriptions live on a node the caller owns and spins (rqt's ``context.node``, or ``sag-dashboard``'s own),
so the model fills on the executor thread while the widget reads it on the Qt thread. Subscribing to
``sag/mask`` is what makes the inference node publish it. The topics are relative: a dashboard started in a robot's
namespace (``--ros-args -r __ns:=/robot1``) shows that robot's graph and only its statuses from ``/diagnostics``.
:meth:`DashboardSource.request_enable` pauses or resumes that graph's inference node through its ``~/enable``.
"""

from __future__ import annotations

import time
from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from std_msgs.msg import Float64, UInt8MultiArray
from std_srvs.srv import SetBool

from sag_ros.dashboard.model import FRACTION_SERIES, DashboardModel, Status
from sag_ros.nodes.convert import msg_to_mask
from sag_ros.nodes.graph import (DIAGNOSTICS_TOPIC, ENABLE_SERVICE, FRACTION_TOPIC, INFERENCE, LATENCY_SERIES,
                                 LATENCY_TOPIC, MASK_TOPIC)


def is_sag_status(status: DiagnosticStatus, namespace: str = "/") -> bool:
    """A status from a sag_ros node (``hardware_id`` ``sag_ros``, or a name that starts with ``sag``) in
    ``namespace`` or below it (every status name starts with its node's full name)."""
    if namespace != "/" and not status.name.startswith(namespace.rstrip("/") + "/"):
        return False
    return status.hardware_id == "sag_ros" or status.name.lstrip("/").startswith("sag")


def status_from_msg(status: DiagnosticStatus, t: float) -> Status:
    level = status.level[0] if isinstance(status.level, (bytes, bytearray)) else int(status.level)
    return Status(status.name, level, status.message, {kv.key: kv.value for kv in status.values}, t)


class DashboardSource:
    """Subscribes ``node`` to the sag latency, fraction, mask and diagnostics topics; arrival times are seconds
    from ``clock`` (monotonic) since this source started."""

    def __init__(self, model: DashboardModel, node: Node, clock: Callable[[], float] = time.monotonic) -> None:
        self.model, self.node = model, node
        self._clock = clock
        self._t0 = clock()
        self.dropped_masks = 0
        subs = [node.create_subscription(Float64, LATENCY_TOPIC.format(name), self._sample_cb(name), 10)
                for name in LATENCY_SERIES]
        subs.append(node.create_subscription(Float64, FRACTION_TOPIC, self._sample_cb(FRACTION_SERIES), 10))
        subs.append(node.create_subscription(UInt8MultiArray, MASK_TOPIC, self._on_mask, 1))
        subs.append(node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, 10))
        self._subscriptions = subs
        # relative: a dashboard started in a robot's namespace pauses that robot's inference node
        self._enable_client = node.create_client(SetBool, f"{INFERENCE}/{ENABLE_SERVICE}")

    def request_enable(self, enabled: bool) -> bool:
        """Ask the inference node to publish chunks (True) or pause (False); False when no inference node offers the
        service. Does not wait for the answer (the Qt thread calls this): the node's next diagnostics show it."""
        if not self._enable_client.service_is_ready():
            self.node.get_logger().warning(f"dashboard: no {self._enable_client.srv_name} service (is {INFERENCE} "
                                           "running in this namespace?)")
            return False
        self._enable_client.call_async(SetBool.Request(data=enabled))
        return True

    def now(self) -> float:
        return self._clock() - self._t0

    def _sample_cb(self, series: str) -> Callable[[Float64], None]:
        def callback(msg: Float64) -> None:
            self.model.add_sample(series, self.now(), msg.data)
        return callback

    def _on_mask(self, msg: UInt8MultiArray) -> None:
        try:
            mask = msg_to_mask(msg)
        except ValueError as exc:
            self.dropped_masks += 1
            self.node.get_logger().warning(f"dashboard: mask dropped: {exc}", throttle_duration_sec=5.0)
            return
        self.model.set_mask(mask, self.now())

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        t = self.now()
        for status in msg.status:
            if is_sag_status(status, self.node.get_namespace()):
                self.model.set_status(status_from_msg(status, t))

    def destroy(self) -> None:
        """Drop the subscriptions (the node stays the caller's)."""
        for sub in self._subscriptions:
            self.node.destroy_subscription(sub)
        self._subscriptions = []
        self.node.destroy_client(self._enable_client)

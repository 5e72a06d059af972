"""``sag-dashboard``: the rqt latency dashboard in its own window, with rclpy alone (no rqt needed).

A node ``sag_dashboard`` spins on a background thread and feeds the model; Qt runs on the main thread.
``--screenshot PATH --after S`` saves the window after S seconds and exits (for docs and checks).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.utilities import remove_ros_args


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sag-dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=200, help="sliding window in chunks (default 200)")
    parser.add_argument("--period-ms", type=float, default=None,
                        help="control period to draw and count misses against (default: the node's, from /diagnostics)")
    parser.add_argument("--screenshot", default=None, help="save a PNG of the window to this path, then exit")
    parser.add_argument("--after", type=float, default=5.0, help="seconds before --screenshot (default 5)")
    return parser.parse_args(argv)


def _spin(executor: SingleThreadedExecutor) -> None:
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    args = _parse(remove_ros_args(argv)[1:])
    try:
        from qtpy import QtCore, QtWidgets

        from sag_ros.dashboard.widget import DashboardWidget
    except ImportError as exc:
        print(f"sag-dashboard: {exc} (install the extra: pip install -e .[dashboard])", file=sys.stderr)
        return 1
    from sag_ros.dashboard.model import DashboardModel
    from sag_ros.dashboard.source import DashboardSource

    rclpy.init(args=argv)
    node = rclpy.create_node("sag_dashboard")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        model = DashboardModel(args.window, args.period_ms)
        source = DashboardSource(model, node)
        threading.Thread(target=_spin, args=(executor,), name="sag_dashboard_spin", daemon=True).start()
        app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(argv[:1])
        widget = DashboardWidget(model, on_enable=source.request_enable)
        widget.resize(1100, 720)
        widget.show()
        signal.signal(signal.SIGINT, lambda *_: app.quit())
        wake = QtCore.QTimer()  # lets Python run the SIGINT handler while Qt waits
        wake.timeout.connect(lambda: None)
        wake.start(200)
        if args.screenshot:
            def shoot() -> None:
                widget.refresh(force=True)
                widget.grab().save(args.screenshot)
                app.quit()
            QtCore.QTimer.singleShot(int(args.after * 1000), shoot)
        rc = app.exec()
        widget.stop()
        source.destroy()
        return int(rc)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


def entry_point() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry_point()

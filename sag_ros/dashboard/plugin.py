"""rqt plugin ``sag_ros_dashboard``: a thin :class:`rqt_gui_py.plugin.Plugin` over the dashboard widget.

rqt provides and spins ``context.node``; the source subscribes on it, the widget draws. rqt is imported here
only, so the rest of the dashboard runs without it (``sag-dashboard``). Start with
``rqt --standalone sag_ros_dashboard`` or from rqt's Plugins > Visualization menu.
"""

from __future__ import annotations

try:
    from rqt_gui_py.plugin import Plugin
except ImportError as exc:  # pragma: no cover - only inside rqt
    raise ImportError("the rqt plugin needs rqt_gui_py (apt install ros-jazzy-rqt-gui-py); "
                      "without rqt, run the same dashboard with `sag-dashboard`") from exc

from sag_ros.dashboard.model import DashboardModel
from sag_ros.dashboard.source import DashboardSource
from sag_ros.dashboard.widget import DashboardWidget


class DashboardPlugin(Plugin):
    def __init__(self, context) -> None:
        super().__init__(context)
        self.setObjectName("SagDashboard")
        self._model = DashboardModel()
        self._source = DashboardSource(self._model, context.node)
        self._widget = DashboardWidget(self._model, on_enable=self._source.request_enable)
        if context.serial_number() > 1:
            self._widget.setWindowTitle(f"{self._widget.windowTitle()} ({context.serial_number()})")
        context.add_widget(self._widget)

    def shutdown_plugin(self) -> None:
        self._widget.stop()
        self._source.destroy()

    def save_settings(self, plugin_settings, instance_settings) -> None:
        instance_settings.set_value("window", self._model.window)

    def restore_settings(self, plugin_settings, instance_settings) -> None:
        window = instance_settings.value("window")
        if window is not None:
            self._widget.window_spin.setValue(int(window))

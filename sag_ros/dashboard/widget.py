"""The latency dashboard widget (qtpy + pyqtgraph): plots a :class:`~sag_ros.dashboard.model.DashboardModel`.

Written against ``qtpy``, so it runs under whatever binding is loaded first (rqt's ``python_qt_binding`` on a
robot, PySide6 from the ``dashboard`` extra elsewhere); pyqtgraph follows the binding already imported. The widget
only reads the model: a timer redraws when ``model.version`` changed.

Layout: a tool row (freeze the plots, window length, CSV export, rates), one status line per sag diagnostic, the
window's statistics, then four plots: latency over time with the control period, the total-latency histogram, the
executed-block fraction per chunk, and the last pruning mask (steps x blocks; computed green, pruned grey).
Given ``on_enable``, the tool row also has "Stop policy" / "Start policy" buttons that call it with False / True
(the inference node's pause service); they hold no state of their own: the node's status line says whether it runs.
"""

from __future__ import annotations

import html
import math
from typing import Callable

import numpy as np
from qtpy import QtCore, QtWidgets

try:
    import pyqtgraph as pg
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("the sag dashboard needs pyqtgraph: pip install -e .[dashboard]") from exc

from sag_ros.dashboard.model import FRACTION_SERIES, LATENCY_SERIES, DashboardModel

CURVE_COLORS = {"obs_age_ms": (86, 180, 233), "plan_ms": (230, 159, 0), "denoise_ms": (0, 158, 115),
                "total_ms": (213, 94, 0)}  # Okabe-Ito: distinguishable for colour-blind readers
LEVEL_COLORS = {0: "#1b7837", 1: "#b35806", 2: "#b2182b", 3: "#636363"}
MASK_LUT = np.array([[0, 158, 115], [200, 200, 200]], np.uint8)  # 0 computed, 1 pruned
PERIOD_PEN = dict(color=(200, 0, 0), width=2, style=QtCore.Qt.DashLine)


def _ms(value: float) -> str:
    return f"{value:.1f}" if math.isfinite(value) else "-"


class DashboardWidget(QtWidgets.QWidget):
    """Live view of ``model``; ``refresh_ms`` is the redraw period (0: redraw only via :meth:`refresh`);
    ``on_enable(enabled) -> bool`` (optional) asks the inference node to run or pause, False if it could not ask."""

    def __init__(self, model: DashboardModel, parent: QtWidgets.QWidget | None = None, *,
                 refresh_ms: int = 100, on_enable: Callable[[bool], bool] | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("SagDashboardWidget")
        self.setWindowTitle("SAG latency")
        self.model = model
        self._drawn_version = -1

        self.pause_button = QtWidgets.QPushButton("Freeze plots")
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip("Stop drawing new samples (the policy keeps running)")
        self.pause_button.toggled.connect(self._on_pause)
        self.window_spin = QtWidgets.QSpinBox()
        self.window_spin.setRange(10, 100_000)
        self.window_spin.setValue(model.window)
        self.window_spin.setSuffix(" chunks")
        self.window_spin.setToolTip("Sliding window: statistics and plots cover the last N chunks")
        self.window_spin.valueChanged.connect(model.set_window)
        self.export_button = QtWidgets.QPushButton("Export CSV...")
        self.export_button.clicked.connect(self._on_export)
        self.rate_label = QtWidgets.QLabel()
        tools = QtWidgets.QHBoxLayout()
        for w in (self.pause_button, QtWidgets.QLabel("Window:"), self.window_spin, self.export_button):
            tools.addWidget(w)
        self._on_enable = on_enable
        self.stop_button = self.start_button = self.control_label = None
        if on_enable is not None:
            self.control_label = QtWidgets.QLabel()
            self.stop_button = QtWidgets.QPushButton("Stop policy")
            self.start_button = QtWidgets.QPushButton("Start policy")
            # bound methods, not lambdas: a lambda holding the widget leaves PySide a cycle it deletes badly
            self.stop_button.clicked.connect(self._on_stop)
            self.start_button.clicked.connect(self._on_start)
            for button, enabled in ((self.stop_button, "false"), (self.start_button, "true")):
                button.setToolTip(f"call the inference node's enable service with {enabled}")
                tools.addWidget(button)
            tools.addWidget(self.control_label)
        tools.addStretch(1)
        tools.addWidget(self.rate_label)

        self.status_label = QtWidgets.QLabel()
        self.status_label.setTextFormat(QtCore.Qt.RichText)
        self.status_label.setWordWrap(True)
        self.stats_label = QtWidgets.QLabel()

        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setBackground("w")
        self.latency_plot = self.plots.addPlot(row=0, col=0, title="Latency per chunk")
        self.latency_plot.setLabels(left="ms", bottom="time (s)")
        self.latency_plot.addLegend(offset=(-5, 5), labelTextColor=(30, 30, 30), brush=(255, 255, 255, 200))
        self.latency_plot.showGrid(x=True, y=True, alpha=0.3)
        self.curves = {name: self.latency_plot.plot(name=name.removesuffix("_ms"),
                                                    pen=pg.mkPen(CURVE_COLORS[name], width=2))
                       for name in LATENCY_SERIES}
        self.period_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(**PERIOD_PEN), label="period",
                                           labelOpts=dict(position=0.03, color=(200, 0, 0), anchors=[(0, 1), (0, 1)]))
        self.latency_plot.addItem(self.period_line)

        self.histogram_plot = self.plots.addPlot(row=0, col=1, title="Total latency histogram")
        self.histogram_plot.setLabels(left="chunks", bottom="ms")
        total_color = CURVE_COLORS["total_ms"]
        self.histogram = self.histogram_plot.plot(stepMode="center", fillLevel=0, pen=pg.mkPen(total_color),
                                                  brush=(*total_color, 120))
        self.histogram_period = pg.InfiniteLine(angle=90, pen=pg.mkPen(**PERIOD_PEN))
        self.histogram_plot.addItem(self.histogram_period)

        self.fraction_plot = self.plots.addPlot(row=1, col=0, title="Executed-block fraction per chunk")
        self.fraction_plot.setLabels(left="fraction", bottom="time (s)")
        self.fraction_plot.setYRange(0.0, 1.05)
        self.fraction_plot.showGrid(x=True, y=True, alpha=0.3)
        self.fraction_curve = self.fraction_plot.plot(pen=pg.mkPen((120, 60, 160), width=2), symbol="o", symbolSize=4,
                                                      symbolBrush=(120, 60, 160))

        self.mask_plot = self.plots.addPlot(row=1, col=1, title="Pruning mask (green computed, grey pruned)")
        self.mask_plot.setLabels(left="step", bottom="block")
        self.mask_plot.invertY(True)
        self.mask_image = pg.ImageItem(axisOrder="row-major")
        self.mask_image.setLookupTable(MASK_LUT)
        self.mask_plot.addItem(self.mask_image)
        self.mask_text = pg.TextItem("no mask (dense planner, or none received)", color=(90, 90, 90), anchor=(0.5, 0.5))
        self.mask_plot.addItem(self.mask_text)
        self.mask_text.setPos(0.5, 0.5)

        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(tools)
        layout.addWidget(self.status_label)
        layout.addWidget(self.stats_label)
        layout.addWidget(self.plots, 1)

        self._timer = QtCore.QTimer(self)
        self._timer.timeout.connect(self.refresh)
        if refresh_ms > 0:
            self._timer.start(refresh_ms)
        self.refresh(force=True)

    # -- controls -------------------------------------------------------------------------------------------------

    def _on_pause(self, paused: bool) -> None:
        self.model.set_paused(paused)
        self.pause_button.setText("Unfreeze plots" if paused else "Freeze plots")

    def _on_stop(self) -> None:
        self._ask_policy(False)

    def _on_start(self) -> None:
        self._ask_policy(True)

    def _ask_policy(self, enabled: bool) -> None:
        if self._on_enable(enabled):
            self.control_label.setText(f"asked the policy to {'start' if enabled else 'stop'}")
        else:
            self.control_label.setText("no inference node offers the enable service")

    def _on_export(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export the shown window", "sag_latency.csv",
                                                        "CSV files (*.csv)")
        if path:
            self.export_csv(path)

    def export_csv(self, path: str) -> int:
        rows = self.model.export_csv(path)
        self.stats_label.setToolTip(f"exported {rows} samples to {path}")
        return rows

    def stop(self) -> None:
        """Stop redrawing (before the model's feeder goes away)."""
        self._timer.stop()

    # -- drawing ------------------------------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        version = self.model.version
        if version == self._drawn_version and not force:
            return
        self._drawn_version = version
        self._draw_text()
        self._draw_plots()

    def _draw_text(self) -> None:
        m = self.model
        statuses = m.statuses()
        if statuses:
            lines = [f'<span style="color:white; background-color:{LEVEL_COLORS.get(s.level, "#636363")};">'
                     f'&nbsp;{s.level_name}&nbsp;</span> <b>{html.escape(s.name)}</b>: {html.escape(s.message)}'
                     for s in statuses]
            self.status_label.setText("<br>".join(lines))
        else:
            self.status_label.setText("<i>no sag diagnostics received yet</i>")
        s = m.summary()
        misses = f"{s.deadline_misses}/{s.count}" if math.isfinite(s.deadline) else "-"
        self.stats_label.setText(f"total latency over the last {s.count} chunks: p50 {_ms(s.p50)} ms, "
                                 f"p95 {_ms(s.p95)} ms, p99 {_ms(s.p99)} ms, max {_ms(s.max)} ms; deadline "
                                 f"{_ms(s.deadline)} ms, misses {misses}" + ("  [plots frozen]" if m.paused else ""))
        achieved, target = m.rates()
        self.rate_label.setText(f"rate {achieved:.2f} Hz / set {target:.2f} Hz" if math.isfinite(target)
                                else f"rate {achieved:.2f} Hz")

    def _draw_plots(self) -> None:
        m = self.model
        period = m.period_ms
        for name, curve in self.curves.items():
            curve.setData(*m.series(name))
        for line in (self.period_line, self.histogram_period):
            line.setVisible(math.isfinite(period))
            if math.isfinite(period):
                line.setValue(period)
        counts, edges = m.histogram("total_ms")
        if len(counts):
            self.histogram.setData(edges, counts)
        else:
            self.histogram.setData([], [])
        self.fraction_curve.setData(*m.series(FRACTION_SERIES))
        mask = m.mask
        self.mask_text.setVisible(mask is None)
        if mask is not None:
            self.mask_image.setImage(mask.astype(np.uint8), levels=(0, 1), autoLevels=False)
            self.mask_plot.setRange(xRange=(0, mask.shape[1]), yRange=(0, mask.shape[0]), padding=0.02)

"""Dashboard widget offscreen: controls drive the model, and a screenshot with synthetic data is not blank."""

import os
import sys

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import: no display needed
QtWidgets = pytest.importorskip("qtpy.QtWidgets", reason="no Qt binding: pip install -e .[dashboard]")
pytest.importorskip("pyqtgraph", reason="pyqtgraph absent: pip install -e .[dashboard]")
QtGui = pytest.importorskip("qtpy.QtGui")

from sag_ros.dashboard.model import LATENCY_SERIES, DashboardModel, Status, read_csv  # noqa: E402
from sag_ros.dashboard.widget import DashboardWidget  # noqa: E402


@pytest.fixture(scope="module")
def qapp():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


def synthetic_model(seed: int = 0, chunks: int = 150) -> DashboardModel:
    """Latencies around a 100 ms period (a few misses), SAG-like fractions, a 10 x 6 mask, a WARN status."""
    rng = np.random.default_rng(seed)
    model = DashboardModel(window=chunks)
    base = {"obs_age_ms": 6.0, "plan_ms": 1.5, "denoise_ms": 55.0}
    for i in range(chunks):
        t = i * 0.1
        parts = {k: v + rng.gamma(2.0, 0.1 * v) for k, v in base.items()}
        for name in LATENCY_SERIES[:-1]:
            model.add_sample(name, t, parts[name])
        model.add_sample("total_ms", t, sum(parts.values()) + rng.gamma(1.5, 8.0))
        model.add_sample("executed_fraction", t, float(rng.uniform(0.3, 0.6)))
    mask = rng.random((10, 6)) < 0.55
    mask[0] = False
    model.set_mask(mask, chunks * 0.1)
    model.set_status(Status("/sag_inference: inference loop", 1, "p95 latency 104.2 ms exceeds the 100.0 ms period",
                            {"period_ms": "100.000", "achieved_rate_hz": "9.600", "target_rate_hz": "10.0"}))
    return model


def _colours(image, step: int = 3) -> set[int]:
    return {image.pixel(x, y) for x in range(0, image.width(), step) for y in range(0, image.height(), step)}


def test_screenshot_with_synthetic_data_is_not_blank(qapp, tmp_path):
    widget = DashboardWidget(synthetic_model(), refresh_ms=0)
    widget.resize(1100, 720)
    widget.show()
    qapp.processEvents()
    widget.refresh(force=True)
    qapp.processEvents()
    path = tmp_path / "dashboard.png"
    assert widget.grab().save(str(path))
    image = QtGui.QImage(str(path))
    assert (image.width(), image.height()) == (1100, 720)
    assert len(_colours(image)) >= 20, "the screenshot is (nearly) one colour"
    # the mask plot shows both of its colours: computed (green) and pruned (grey)
    mask_colours = {QtGui.QColor(*rgb).rgb() for rgb in ((0, 158, 115), (200, 200, 200))}
    assert mask_colours <= _colours(image, step=2)
    assert "WARN" in widget.status_label.text() and "sag_inference" in widget.status_label.text()
    assert "misses" in widget.stats_label.text() and "9.60 Hz / set 10.00 Hz" in widget.rate_label.text()
    widget.close()


def test_controls_pause_resize_and_export(qapp, tmp_path):
    model = synthetic_model(chunks=60)
    widget = DashboardWidget(model, refresh_ms=0)
    widget.pause_button.click()
    assert model.paused and widget.pause_button.text() == "Unfreeze plots"
    model.add_sample("total_ms", 99.0, 1.0)
    assert model.count("total_ms") == 60  # frozen while paused
    widget.pause_button.click()
    assert not model.paused
    widget.window_spin.setValue(30)
    assert model.window == 30 and model.count("total_ms") == 30
    rows = widget.export_csv(str(tmp_path / "shown.csv"))
    assert rows == 30 * 5
    np.testing.assert_array_equal(read_csv(tmp_path / "shown.csv")["total_ms"][1], model.series("total_ms")[1])
    empty = DashboardWidget(DashboardModel(), refresh_ms=0)  # nothing received: draws without errors
    assert "no sag diagnostics" in empty.status_label.text()
    assert empty.mask_text.isVisible() and not widget.mask_text.isVisible()  # "no mask" only without one
    for w in (widget, empty):
        w.close()


def test_policy_buttons_call_on_enable_and_say_what_happened(qapp):
    asked = []
    answers = iter([True, True, False])
    widget = DashboardWidget(DashboardModel(), refresh_ms=0,
                             on_enable=lambda enabled: asked.append(enabled) or next(answers))
    widget.stop_button.click()
    assert asked == [False] and widget.control_label.text() == "asked the policy to stop"
    widget.start_button.click()
    assert asked == [False, True] and widget.control_label.text() == "asked the policy to start"
    widget.stop_button.click()  # nobody offers the service
    assert widget.control_label.text() == "no inference node offers the enable service"
    plain = DashboardWidget(DashboardModel(), refresh_ms=0)
    assert plain.stop_button is None and plain.start_button is None  # no callback, no buttons
    for w in (widget, plain):
        w.close()


def test_redrawing_live_data_keeps_the_reference_count_of_none(qapp):
    """PySide6 6.12.0 drops a reference to None on every void call; on Python 3.11 sag-dashboard then aborted
    ("deallocating None") within seconds of live data. A few hundred redraws must leave None's count where it was
    (on Python >= 3.12 None is immortal and the count never moves)."""
    model = synthetic_model(chunks=50)
    widget = DashboardWidget(model, refresh_ms=0)
    rng = np.random.default_rng(1)
    before = sys.getrefcount(None)
    for i in range(300):
        model.add_sample("total_ms", 5.0 + i * 0.1, float(rng.uniform(50, 120)))
        widget.refresh()
    assert sys.getrefcount(None) - before > -100, "the Qt binding loses references to None (PySide6 6.12.0?)"
    widget.close()

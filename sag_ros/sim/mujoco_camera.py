"""Fast headless RGB frames of a MuJoCo camera, right side up.

Why not an env's own ``render()``: gymnasium's renderer keeps MuJoCo's defaults (multisampling, shadows,
reflections), 100-175 ms a frame on a CPU rasteriser (Mesa llvmpipe); with those off a 96x96 frame costs
7-8 ms (2 busy cores; size barely matters, 256x256 costs 11-12 ms). Why a rotation: Meta-World's ``corner*``
cameras are rolled about 180 degrees about their optical axis (their up axis points down), so their frames
come out upside down. Turning the pixels by 180 degrees gives what the same camera rolled back upright sees;
flipping rows only would mirror the scene.

MuJoCo binds its GL backend once, when it is first imported, so :func:`select_gl_backend` must run before
anything imports ``mujoco`` (``metaworld`` does).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

GL_BACKEND_VARIABLE = "MUJOCO_GL"
DEFAULT_GL_BACKEND = "egl"
"""Headless EGL: a GPU where there is one, else Mesa's llvmpipe. Override with ``MUJOCO_GL=osmesa``
(needs the system's libosmesa6) before the first Meta-World task is built."""


def select_gl_backend() -> None:
    """Choose MuJoCo's GL backend before mujoco is imported: ``$MUJOCO_GL`` when set, else EGL.

    Once mujoco is imported its backend is fixed for the process, so then nothing is changed (a process that
    imported it with no choice made has GLFW, which works only with a display).
    """
    if "mujoco" not in sys.modules:
        os.environ.setdefault(GL_BACKEND_VARIABLE, DEFAULT_GL_BACKEND)


class MujocoCamera:
    """One named camera of a model, rendered offscreen at a fixed size without shadows, reflections or
    multisampling. Call :meth:`close` when done: it releases the GL context.

    Every GL call (creating the renderer, rendering, closing) runs on one thread the camera owns: a GL context
    is current in one thread at a time, and a ROS multi-threaded executor runs the sim node's timer on whichever
    of its threads is free (`sag-bringup` with a Meta-World policy failed with EGL_BAD_ACCESS on the second
    thread). The hop costs ~50 us against a 7-14 ms frame, and it holds for EGL, OSMesa and GLFW alike.
    """

    def __init__(self, model: Any, camera: str, height: int, width: int) -> None:
        self._gl_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mujoco_gl")
        self._renderer = self._gl_thread.submit(self._make_renderer, model, height, width).result()
        self._camera = model.camera(camera).id

    @staticmethod
    def _make_renderer(model: Any, height: int, width: int) -> Any:
        import mujoco

        model.vis.quality.offsamples = 0  # read when the renderer allocates its framebuffer
        renderer = mujoco.Renderer(model, height, width)
        flags = renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        return renderer

    def render(self, data: Any) -> np.ndarray:
        """uint8 [H, W, 3] RGB frame of ``data``, turned by 180 degrees when the camera's up axis points down."""
        return self._gl_thread.submit(self._render, data).result()

    def _render(self, data: Any) -> np.ndarray:
        self._renderer.update_scene(data, camera=self._camera)
        image = self._renderer.render()
        up_z = data.cam_xmat[self._camera][7]  # row-major frame: column 1 (the up axis), world z
        return np.ascontiguousarray(image[::-1, ::-1]) if up_z < 0 else image

    def close(self) -> None:
        if self._renderer is None:
            return
        self._gl_thread.submit(self._renderer.close).result()
        self._gl_thread.shutdown()
        self._renderer = None

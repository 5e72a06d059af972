"""The ``main`` of every node executable: init, build, spin, and a clean stop on Ctrl-C or shutdown."""

from __future__ import annotations

import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


class NodeStartupError(RuntimeError):
    """A node cannot start (missing or mismatched model, bad configuration): printed, exit code 1."""


class BadParametersError(NodeStartupError, ValueError):
    """The node's parameters do not validate (a ValueError too: the same error the dataclass configs raise)."""


def run_node(make_node: Callable[[], Node], spin: Callable[[Node], None] = rclpy.spin, args=None) -> None:
    """The talker pattern: spin until interrupted; always destroy the node and shut rclpy down."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except NodeStartupError as exc:  # say what to fix, without a traceback
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()

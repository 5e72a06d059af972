"""Every `sag` command in README.md and docs/results.md still parses, and the shipped files it names exist.

The commands are what reproduces each results table; a renamed flag or a removed model would leave the docs
quietly wrong. Each fenced shell block runs in bash with `sag` and `python` replaced by recorders, so its variables,
loops and line continuations expand as a reader's shell would expand them; nothing is executed (a `bash script.sh`
line runs the script's own lines the same way).
"""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sag_ros.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/results.md")
SUBCOMMAND = re.compile(r"^\s*sag (datagen|render|train|train-pruner|eval|pack|bench|paired|bench-ros)\b", re.M)
RECORDERS = ('sag() { printf "sag\\0"; printf "%s\\0" "$@"; echo; }\n'
             'python() { printf "python\\0"; printf "%s\\0" "$@"; echo; }\n'
             'bash() { ( . "$@" ); }\n'  # a documented script runs in a subshell with these recorders
             'sag-bringup() { :; }\n')  # runs the live graph: never started here


def documented_commands(doc: str) -> list[list[str]]:
    """argv of every `sag` / `python` call in the doc's shell blocks that hold a `sag` subcommand."""
    calls = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", (ROOT / doc).read_text(), re.S):
        if SUBCOMMAND.search(block):
            run = subprocess.run(["bash", "-c", RECORDERS + block], capture_output=True, text=True, check=True)
            calls += [line.split("\0")[:-1] for line in run.stdout.splitlines() if line]
    return calls


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash to expand the documented shell blocks")
@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_parse_and_name_shipped_files(doc):
    calls = documented_commands(doc)
    assert sum(argv[0] == "sag" for argv in calls) >= 10, f"{doc}: found {len(calls)} commands; did the format change?"
    for program, *argv in calls:
        if program == "python":
            module = argv[1] if argv[0] == "-m" else None
            assert (importlib.util.find_spec(module) is not None if module else (ROOT / argv[0]).is_file()), \
                f"{doc}: python {' '.join(argv[:2])}: no such script or module"
            continue
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{doc}: `sag {' '.join(argv)}` no longer parses")
        for option in ("policy", "pruner", "init"):
            values = getattr(args, option, None)
            for value in values if isinstance(values, list) else [values]:
                path = value.rsplit("=", 1)[-1] if value else ""
                assert not path.startswith("models/") or (ROOT / path).is_file(), f"{doc}: {path} is not shipped"

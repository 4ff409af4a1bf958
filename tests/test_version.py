"""One version string: lockfleet.__version__ is what the installed metadata and every --version say."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import lockfleet

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_reads_the_package_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"], "pyproject.toml writes a second version string"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "lockfleet.__version__"}
    assert importlib.metadata.version("lockfleet") == lockfleet.__version__


@pytest.mark.parametrize("command", [
    ["-m", "lockfleet.cli"],
    ["-m", "lockfleet.agent.pylocks.run"],
    ["-m", "lockfleet.agent.kernel.procfs_agent"],
])
def test_every_entry_point_prints_the_one_version(command: list[str]) -> None:
    out = subprocess.run([sys.executable, *command, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == lockfleet.__version__


def test_reports_name_the_one_version() -> None:
    """A report's kernel-version line names lockfleet and its version (from lockfleet.__version__)."""
    import pyarrow as pa

    from lockfleet import Engine

    batch = pa.RecordBatch.from_pydict({"ts_ns": [1, 2], "tid": [1, 1], "op": [0, 0], "lock": ["a", "a"]},
                                       schema=pa.schema([("ts_ns", pa.int64()), ("tid", pa.int64()),
                                                         ("op", pa.uint8()), ("lock", pa.string())]))
    (alert,) = Engine().ingest(batch, host="h")
    assert f"\nlockfleet {lockfleet.__version__}\n" in alert.render()

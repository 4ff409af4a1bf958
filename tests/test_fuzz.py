"""Fuzzing in the suite: every saved crash input (tests/fuzz/crashes/TARGET/, each one a bug found
by fuzzing and fixed) and every seed replays cleanly through its target, and a short
coverage-guided run of each target (atheris; a few seconds, the libFuzzer seed derived from the
run's seed, printed) finds no new crash. The long runs are in docs/RELIABILITY.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

FUZZ = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ))

import seeds  # noqa: E402
import targets  # noqa: E402

SHORT_RUN_SECONDS = {"ingest": 5, "push": 3, "dmesg": 3, "proc": 3}


def saved(target: str) -> list[Path]:
    d = FUZZ / "crashes" / target
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_saved_crashes_and_seeds_replay_cleanly(target):
    inputs = [(p.name, p.read_bytes()) for p in saved(target)]
    inputs += [(f"seed {i}", s) for i, s in enumerate(seeds.SEEDS[target]())]
    assert inputs, f"no inputs for {target}"
    for name, data in inputs:
        try:
            targets.TARGETS[target](data)
        except Exception as exc:
            pytest.fail(f"{target} input {name} fails again: {type(exc).__name__}: {exc}")


def test_the_saved_crashes_are_there():
    # the bugs fuzzing found in the ingest decoder: an empty stream whose dictionary column has
    # values of struct type, a duplicated `host` column, string offsets in a buffer longer than used
    assert len(saved("ingest")) >= 3


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_a_short_fuzzing_run_finds_no_crash(target, tmp_path, request):
    try:
        import atheris
    except ImportError:
        atheris = None
    require(atheris, "atheris is not installed (it is in the test extras: pip install -e '.[test]')")
    seed = 1 + getattr(request.config, "_lockfleet_hypothesis_seed", 0) % (1 << 30)
    corpus = tmp_path / "corpus"
    seeds.write(target, corpus)
    proc = subprocess.run([sys.executable, str(FUZZ / "run.py"), target, f"-seed={seed}",
                           f"-max_total_time={SHORT_RUN_SECONDS[target]}", f"-artifact_prefix={tmp_path}/",
                           "-rss_limit_mb=4096", str(corpus)], capture_output=True, text=True, timeout=180,
                          errors="replace")
    crashes = sorted(tmp_path.glob("crash-*")) + sorted(tmp_path.glob("leak-*")) + sorted(tmp_path.glob("oom-*"))
    runs = [ln for ln in proc.stderr.splitlines() if ln.startswith("Done ")]
    print(f"fuzz {target}: libFuzzer -seed={seed}: {runs[-1] if runs else 'no summary'}")
    assert proc.returncode == 0 and not crashes, \
        f"fuzzing {target} (libFuzzer -seed={seed}) found {crashes}:\n{proc.stderr[-4000:]}"

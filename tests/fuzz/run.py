"""Coverage-guided fuzzing (atheris, libFuzzer) of one target of targets.py.

    .venv/bin/python tests/fuzz/run.py TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is ingest, push or dmesg. With no corpus dir, or only empty ones, the seeds of seeds.py
are written into the (first, or a temporary) one. The lockfleet modules are instrumented for coverage. A crash (an exception the
target does not expect) stops the run with the traceback and libFuzzer writes the input as
`crash-<sha1>` (use `-artifact_prefix=DIR/`): put it in tests/fuzz/crashes/TARGET/ and
tests/test_fuzz.py replays it on every run from then on. A long run, as docs/RELIABILITY.md does:

    .venv/bin/python tests/fuzz/run.py ingest -max_total_time=3600 -artifact_prefix=/tmp/fuzz- /tmp/corpus-ingest
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["lockfleet"]):
    import targets

import seeds


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in targets.TARGETS:
        print(f"usage: run.py {{{','.join(targets.TARGETS)}}} [libFuzzer options] [CORPUS_DIR ...]", file=sys.stderr)
        return 2
    name = argv[1]
    rest = argv[2:]
    dirs = [Path(a) for a in rest if not a.startswith("-")]
    if not dirs:
        dirs = [Path(tempfile.mkdtemp(prefix=f"lockfleet-fuzz-{name}-"))]
        rest.append(str(dirs[0]))
    if not any(d.is_dir() and any(d.iterdir()) for d in dirs):     # an empty corpus starts from the seeds
        seeds.write(name, dirs[0])
    fn = targets.TARGETS[name]
    atheris.Setup([argv[0], *rest], fn)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

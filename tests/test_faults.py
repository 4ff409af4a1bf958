"""Faults injected into a real `lockfleet serve`: a sink that refuses a publication for good
(dead-lettered, counted, and the sink's later publications go on), the outbox compacted, the
outbox directory read-only at start or full while running, and a slow disk (every fsync delayed
by an LD_PRELOAD shim built here with the system C compiler). Snapshot damage is in
tests/test_snapshot_upgrade.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, mount_tmpfs, require, require_program, run_lockfleet, umount
from lockfleet import Engine
from lockfleet.agent import Stream, fetch_stats, push_streams, to_ipc
from lockfleet.publishing.outbox import Outbox
from receivers import WebhookReceiver, events, nest, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
HERE = Path(__file__).resolve().parent


def metrics(port: int) -> dict[str, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {name: float(value) for name, value in
            (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))}


def finding(target: str, i: int, prefix: str = "f") -> None:
    """An ABBA between two new hosts: one new circular finding."""
    a, b = f"{prefix}{i}_a", f"{prefix}{i}_b"
    for host, rows in ((f"{prefix}{i}-x", nest(1, a, b)), (f"{prefix}{i}-y", nest(1, b, a))):
        push_streams(target, host, [Stream("s", [to_ipc(events(rows).to_batches()[0])])], retry_for=30)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def publishing(target: str) -> dict:
    return fetch_stats(target)["publishing"]


# ---- a sink that refuses for good ------------------------------------------------------------------------


def test_a_sink_refusing_a_publication_for_good_dead_letters_it_and_goes_on(serve_factory):
    hook = WebhookReceiver(refuse_if=lambda body: 422 if b"poison0_a" in body else 0)
    mport = free_port()
    try:
        server = serve_factory("--webhook", hook.url, "--publish-interval", "0.02", "--sink-retry-max", "0.1",
                               "--metrics-listen", f"127.0.0.1:{mport}")
        finding(server.target, 0, "poison")                # refused with 422, every time
        finding(server.target, 1)
        finding(server.target, 2)
        wait_for(lambda: len(hook.accepted) == 2, 30, "the two later publications at the webhook")
        assert hook.refusals == [422, 422, 422]            # three tries, then dead-lettered
        dead = jsonl(server.data_dir / "publish" / "dead-letters.jsonl")
        assert [(d["seq"], d["event"], d["tries"]) for d in dead] == [(1, "new", 3)]
        assert "HTTP 422" in dead[0]["error"] and dead[0]["sink"].startswith("webhook:")
        assert [json.loads(d.body)["seq"] for d in hook.accepted] == [2, 3]
        sinks = publishing(server.target)["sinks"]
        (name,) = [n for n in sinks if n.startswith("webhook")]
        assert sinks[name]["dead_lettered"] == 1 and sinks[name]["pending"] == 0
        assert metrics(mport)[f'lockfleet_sink_dead_letters_total{{sink="{name}"}}'] == 1
        assert len(jsonl(server.data_dir / "alerts.jsonl")) == 3          # the other sink got all three
        # a transient refusal (503) is retried, never dead-lettered
        hook.refuse_if = lambda body: 503 if b"f3_a" in body and len(hook.refusals) < 6 else 0
        finding(server.target, 3)
        wait_for(lambda: len(hook.accepted) == 3, 30, "the publication after the 503s")
        assert hook.refusals[3:] == [503, 503, 503] and len(jsonl(server.data_dir / "publish" / "dead-letters.jsonl")) == 1
        # after a restart nothing dead-lettered or delivered is sent again
        server.restart()
        wait_for(lambda: publishing(server.target)["scans"] >= 1, 30, "a look after the restart")
        assert len(hook.accepted) == 3 and len(hook.refusals) == 6
    finally:
        hook.close()


# ---- outbox compaction -----------------------------------------------------------------------------------


def _alerts_after(eng: Engine, host: str, rows: list[tuple]) -> list:
    eng.ingest(events(rows), host=host)
    return eng.alerts()


def test_outbox_compaction_keeps_each_findings_latest_and_what_is_unacknowledged(tmp_path):
    eng = Engine()
    box = Outbox(tmp_path / "outbox.jsonl").open()

    def publish() -> None:
        for alert in sorted(eng.alerts(), key=lambda a: a.seq):
            change = box.change(alert)
            if change:
                box.append(alert, *change)

    for i in range(4):                       # four findings, each growing to more hosts
        _alerts_after(eng, f"c{i}-x", nest(1, f"c{i}_a", f"c{i}_b"))
        _alerts_after(eng, f"c{i}-y", nest(1, f"c{i}_b", f"c{i}_a"))
        publish()
    for extra in range(3):
        for i in range(4):
            _alerts_after(eng, f"c{i}-more{extra}", nest(1, f"c{i}_a", f"c{i}_b"))
        publish()
    assert box.last_seq == 16 and box.records == 16
    before = {a.id: box.change(a) for a in eng.alerts()}
    latest = {r["id"]: r["seq"] for r in box.after(0)}
    assert box.compact(10) == 10 - sum(1 for s in latest.values() if s <= 10)
    kept = [r["seq"] for r in box.after(0)]
    assert kept == sorted({*range(11, 17), *(s for s in latest.values() if s <= 10)})
    assert [r["seq"] for r in box.after(12)] == [13, 14, 15, 16] and [r["seq"] for r in box.after(3)] == kept
    box.close()
    again = Outbox(tmp_path / "outbox.jsonl").open()       # what a restart reads back
    assert [r["seq"] for r in again.after(0)] == kept and again.last_seq == 16
    assert {a.id: again.change(a) for a in eng.alerts()} == before   # growth is still told right
    _alerts_after(eng, "c0-late", nest(1, "c0_a", "c0_b"))
    (alert,) = [a for a in eng.alerts() if "c0_a" in a.locks]
    rec = again.append(alert, *again.change(alert))
    assert rec["seq"] == 17 and rec["event"] == "grew" and rec["new_hosts"] == ["c0-late"]
    again.close()


def test_the_service_compacts_its_outbox_and_a_restart_publishes_nothing_again(serve_factory):
    server = serve_factory("--publish-interval", "0.02", "--outbox-compact-records", "3", "--republish-interval", "0")
    for i in range(2):
        finding(server.target, i, "k")
        wait_for(lambda: publishing(server.target)["last_seq"] == 4 * i + 1, 30, "the finding's publication")
        for grow in range(3):          # the same order on more hosts: the finding grows
            push_streams(server.target, f"k{i}-more{grow}",
                         [Stream("s", [to_ipc(events(nest(1, f"k{i}_a", f"k{i}_b")).to_batches()[0])])])
            wait_for(lambda: publishing(server.target)["last_seq"] == 4 * i + 2 + grow, 30, "the growth")
    wait_for(lambda: publishing(server.target)["compactions"] >= 1, 30, "a compaction")
    outbox = jsonl(server.data_dir / "publish" / "outbox.jsonl")
    assert len(outbox) <= 4 and outbox[-1]["seq"] == 8 and 4 in [p["seq"] for p in outbox]  # k0's latest stays
    server.restart()
    wait_for(lambda: publishing(server.target)["scans"] >= 1, 30, "a look after the restart")
    st = publishing(server.target)
    assert st["last_seq"] == 8 and st["published"] == 0
    assert [p["seq"] for p in jsonl(server.data_dir / "alerts.jsonl")] == list(range(1, 9))
    assert [p["event"] for p in jsonl(server.data_dir / "alerts.jsonl")] == ["new", "grew", "grew", "grew"] * 2


# ---- the outbox directory unwritable ---------------------------------------------------------------------


def test_a_read_only_outbox_directory_stops_the_start_with_a_clear_reason(tmp_path):
    require(os.geteuid() == 0, "a read-only bind mount needs root")
    pub = tmp_path / "data" / "publish"
    pub.mkdir(parents=True)
    mounted = subprocess.run(["mount", "--bind", str(pub), str(pub)], capture_output=True).returncode == 0
    require(mounted, "cannot bind-mount here")
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(pub)], capture_output=True).returncode == 0
        require(ro, "cannot remount read-only here")
        proc = run_lockfleet("serve", "--listen", "127.0.0.1:0", "--data-dir", tmp_path / "data", timeout=60)
    finally:
        umount(pub)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "publishing state" in last and "Read-only file system" in last and str(pub) in last


def test_a_full_outbox_directory_holds_publications_back_not_ingest(tmp_path, serve_factory):
    data = tmp_path / "data"
    require(mount_tmpfs(data / "publish", "256k"), "cannot mount a tmpfs here (needs root)")
    try:
        server = serve_factory("--publish-interval", "0.02", data_dir=data)
        filler = data / "publish" / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)       # fill it up to the last byte
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        finding(server.target, 0, "full")                     # ingest goes on: acked
        finding(server.target, 1, "full")
        assert fetch_stats(server.target)["events"] == 16
        wait_for(lambda: "publishing failed (will retry)" in server.log(), 30, "the publisher to meet the full disk")
        assert publishing(server.target)["last_seq"] == 0 and jsonl(data / "alerts.jsonl") == []
        filler.unlink()                                       # space returns
        wait_for(lambda: len(jsonl(data / "alerts.jsonl")) == 2, 30, "the two publications once there is room")
        server.kill()
        server.start()
        wait_for(lambda: publishing(server.target)["scans"] >= 1, 30, "a look after the restart")
        assert [p["seq"] for p in jsonl(data / "alerts.jsonl")] == [1, 2]      # none lost, none twice
        server.stop()
    finally:
        umount(data / "publish")


# ---- a slow disk ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_fsync(tmp_path_factory) -> Path:  # noqa: ANN001
    cc = require_program("cc", "gcc")
    out = tmp_path_factory.mktemp("shim") / "slowfsync.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(HERE / "faults" / "slowfsync.c"), "-ldl"],
                   check=True, capture_output=True, timeout=120)
    return out


def test_a_slow_disk_slows_acks_group_commit_amortizes_it_and_nothing_is_lost(serve_factory, monkeypatch,
                                                                               slow_fsync):
    delay_ms = 40
    monkeypatch.setenv("LD_PRELOAD", str(slow_fsync))
    monkeypatch.setenv("LOCKFLEET_FSYNC_DELAY_MS", str(delay_ms))
    mport = free_port()
    server = serve_factory("--metrics-listen", f"127.0.0.1:{mport}", "--group-commit-ms", "2")
    monkeypatch.delenv("LD_PRELOAD")           # only the service runs on the slow disk
    rows = nest(1, "slow_a", "slow_b") * 50
    batch = to_ipc(events(rows).to_batches()[0])
    import threading

    errors: list[BaseException] = []

    def agent(i: int) -> None:
        try:
            push_streams(server.target, f"slow-{i}", [Stream("s", [batch] * 20)], window=8)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    stats = fetch_stats(server.target)
    assert stats["events"] == 4 * 20 * len(rows)
    m = metrics(mport)
    fsyncs = m["lockfleet_fsync_latency_seconds_count"]
    assert m["lockfleet_fsync_latency_seconds_sum"] / fsyncs >= delay_ms / 1000 * 0.9     # the disk was slow
    assert fsyncs < 80 / 2, f"{fsyncs} fsyncs for 80 batches: group commit should share them"
    assert m["lockfleet_ack_latency_seconds_sum"] / m["lockfleet_ack_latency_seconds_count"] >= delay_ms / 1000 * 0.5
    print(f"fsync delayed {delay_ms} ms: 80 batches in {fsyncs:.0f} fsyncs "
          f"({80 / fsyncs:.1f} batches per fsync), mean fsync "
          f"{m['lockfleet_fsync_latency_seconds_sum'] / fsyncs * 1e3:.0f} ms, mean ack "
          f"{m['lockfleet_ack_latency_seconds_sum'] / m['lockfleet_ack_latency_seconds_count'] * 1e3:.0f} ms")
    server.kill()                               # and what was acked is there after a SIGKILL
    server.start()
    assert fetch_stats(server.target)["events"] == 4 * 20 * len(rows)


def test_a_second_service_on_the_same_data_dir_is_refused(lockfleet_server):
    proc = run_lockfleet("serve", "--listen", "127.0.0.1:0", "--data-dir", lockfleet_server.data_dir, timeout=60)
    assert proc.returncode == 1
    assert "in use by another lockfleet serve" in proc.stderr.strip().splitlines()[-1]
    assert fetch_stats(lockfleet_server.target)["events"] == 0        # the first one is untouched

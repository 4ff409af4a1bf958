"""End to end: `lockfleet serve` publishing to a real Prometheus Alertmanager (Debian's, started
here on loopback and read back through its API v2 and its metrics), a real webhook receiver (an
HTTP server in this process, HMAC-checked) and the JSONL file, while the seed scenario and a
background workload are pushed with `lockfleet push`. Each sink must get each publication exactly
once, in order, across a sink outage and restarts of the service; suppressed findings (recorded
ahead by id, or through a blessed order) reach no sink and are still listed."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port, run_lockfleet
from receivers import (
    Alertmanager,
    WebhookReceiver,
    background_table,
    events,
    nest,
    require_alertmanager,
    wait_for,
    write,
)

from lockfleet import Engine
from lockfleet.demo import CYCLE, HOSTS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SECRET = b"a webhook secret, 32 bytes long!"


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def _finding_id(*tables_by_host: tuple[str, object]) -> str:
    """The id the service will give the finding these events raise, applied in this order (a
    circular finding's id is its inversion's, so the order of the two sides decides it)."""
    eng = Engine()
    for host, table in tables_by_host:
        eng.ingest(table, host=host)
    (alert,) = eng.alerts()
    return alert.id


def _push(target: str, path: Path, host: str) -> None:
    _ok(run_lockfleet("push", path, "--host", host, "--target", target))


def _push_all(target: str, jobs: list[list[tuple[Path, str]]]) -> None:
    """Each job (a list of pushes, in order) on its own thread, all at once."""
    errors: list[BaseException] = []

    def run(job: list[tuple[Path, str]]) -> None:
        try:
            for path, host in job:
                _push(target, path, host)
        except BaseException as exc:  # pytest.fail inside a thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors


def _jsonl(server) -> list[dict]:
    path = server.data_dir / "alerts.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _stats(server) -> dict:
    return json.loads(_ok(run_lockfleet("stats", "--json", "--target", server.target)))


@pytest.fixture
def alertmanager(tmp_path):
    am = Alertmanager(require_alertmanager(), tmp_path / "am", free_port())
    am.start()
    try:
        yield am
    finally:
        am.stop()


@pytest.fixture
def webhook():
    hook = WebhookReceiver(secret=SECRET)
    try:
        yield hook
    finally:
        hook.close()


def test_each_sink_gets_each_finding_once_across_outage_and_restarts(request, tmp_path, serve_factory, scenario_files,
                                                                    alertmanager, webhook):
    d = tmp_path / "events"
    d.mkdir()
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    (tmp_path / "blessed").write_text("# reviewed: blessed_x is always taken first\nblessed_x -> blessed_y\n")
    t = {  # findings made on purpose, beside the seed's cycle
        "web-1": events(nest(1, "ab_outer", "ab_inner")), "web-2": events(nest(2, "ab_inner", "ab_outer")),
        "web-3": events([(1, 0, "rec_lock"), (1, 0, "rec_lock"), (1, 1, "rec_lock"), (1, 1, "rec_lock")]),
        "web-4": events(nest(1, "blessed_x", "blessed_y")), "web-5": events(nest(1, "blessed_y", "blessed_x")),
        "web-7": events(nest(1, "accepted_s", "accepted_t")), "web-8": events(nest(1, "accepted_t", "accepted_s")),
        # later: evidence that grows two findings, and a new finding
        "perf-9": events(nest(7, "&cpuctx_mutex", "bpf_event_mutex")),
        "web-6": events(nest(3, "ab_outer", "ab_inner", mode=1)),
        "web-10": events(nest(1, "late_p", "late_q")), "web-11": events(nest(1, "late_q", "late_p")),
        "bg-1": background_table(1, 4000), "bg-2": background_table(2, 4000),
    }
    files = {host: write(table, d / f"{host}.parquet") for host, table in t.items()}
    accepted_id = _finding_id(("web-7", t["web-7"]), ("web-8", t["web-8"]))
    blessed_id = _finding_id(("web-4", t["web-4"]), ("web-5", t["web-5"]))

    server = serve_factory("--alertmanager", alertmanager.url, "--webhook", webhook.url,
                           "--webhook-secret-file", tmp_path / "secret", "--blessed", tmp_path / "blessed",
                           "--publish-interval", "0.05", "--sink-retry-max", "0.5",
                           "--republish-interval", "0", "--alertmanager-label", "cluster=test")
    target = server.target
    out = _ok(run_lockfleet("suppress", accepted_id, "--reason", "accepted: s and t never meet", "--author", "carol",
                            "--target", target))
    assert "suppressed" in out

    # 1. the seed (bpf-3 last: it closes the cycle) beside background traffic and the other findings
    seed = [(scenario_files[h], h) for h in HOSTS]
    _push_all(target, [seed, [(files["bg-1"], "bg-1"), (files["web-1"], "web-1"), (files["web-3"], "web-3")],
                       [(files["bg-2"], "bg-2"), (files["web-2"], "web-2"), (files["web-4"], "web-4"),
                        (files["web-5"], "web-5")],
                       [(files["web-7"], "web-7"), (files["web-8"], "web-8")]])
    alerts = {a["id"]: a for a in json.loads(_ok(run_lockfleet("alerts", "--json", "--target", target)))["alerts"]}
    assert len(alerts) == 5
    cycle_id = next(i for i, a in alerts.items() if a["locks"] == list(CYCLE))
    ab_id = next(i for i, a in alerts.items() if "ab_outer" in a["locks"])
    rec_id = next(i for i, a in alerts.items() if a["kind"] == "recursive")
    assert alerts[accepted_id]["suppression"]["author"] == "carol"
    assert alerts[blessed_id]["suppression"] == {"id": blessed_id, "reason": "blessed order blessed_x -> blessed_y",
                                                 "author": f"--blessed {tmp_path / 'blessed'}", "ts_ns": 0,
                                                 "blessed": True}
    first = {cycle_id, ab_id, rec_id}
    wait_for(lambda: len(_jsonl(server)) == 3 and len(webhook.accepted) == 3 and alertmanager.received() == 3,
             30, "the three published findings at every sink")
    assert {p["id"] for p in _jsonl(server)} == first
    am_alerts = {a["labels"]["finding"]: a for a in alertmanager.alerts()}
    assert set(am_alerts) == first
    cyc = am_alerts[cycle_id]
    assert cyc["labels"] == {"alertname": "LockdepCircularLockingDependency", "kind": "circular",
                             "locks": ",".join(CYCLE), "severity": "critical", "finding": cycle_id,
                             "service": "lockfleet", "cluster": "test"}
    assert "possible circular locking dependency detected" in cyc["annotations"]["description"]
    assert cyc["annotations"]["hosts"] == ", ".join(sorted(HOSTS))
    assert am_alerts[rec_id]["labels"]["alertname"] == "LockdepRecursiveLocking"

    # a client following the stream through everything below, reconnecting by itself
    from conftest import lockfleet_command

    watcher = subprocess.Popen([*lockfleet_command(), "watch", "--json", "--count", "6", "--retry-for", "60",
                                "--target", target], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    request.addfinalizer(lambda: watcher.poll() is None and watcher.kill())

    # 2. an outage of the webhook and of Alertmanager; findings grow meanwhile; ingest goes on
    webhook.failing = True
    alertmanager.stop()
    _push_all(target, [[(files["perf-9"], "perf-9")], [(files["web-6"], "web-6")]])
    wait_for(lambda: len(_jsonl(server)) == 5, 30, "the two growths in the JSONL file")
    wait_for(lambda: webhook.refused >= 1, 30, "the webhook sink to try")
    grew = _jsonl(server)[3:]
    assert {(p["id"], p["event"]) for p in grew} == {(cycle_id, "grew"), (ab_id, "grew")}
    assert next(p for p in grew if p["id"] == cycle_id)["new_hosts"] == ["perf-9"]
    assert next(p for p in grew if p["id"] == ab_id)["new_kinds"] == ["ab_outer -> ab_inner: SN"]

    # 3. the service restarts while both are still down, and a new finding comes
    server.restart()
    pending = _stats(server)["publishing"]["sinks"]
    assert pending["jsonl:alerts.jsonl"]["pending"] == 0
    _push_all(target, [[(files["web-10"], "web-10"), (files["web-11"], "web-11")]])
    wait_for(lambda: len(_jsonl(server)) == 6, 30, "the late finding in the JSONL file")
    assert webhook.accepted[3:] == []

    # 4. both come back: each gets what it missed, once, in order
    webhook.failing = False
    alertmanager.start()
    wait_for(lambda: len(webhook.accepted) == 6 and alertmanager.received() == 3, 30,
             "the webhook and Alertmanager to catch up")
    published = _jsonl(server)
    assert [p["seq"] for p in published] == [1, 2, 3, 4, 5, 6]
    assert [p["event"] for p in published] == ["new"] * 3 + ["grew"] * 2 + ["new"]
    assert accepted_id not in {p["id"] for p in published} and blessed_id not in {p["id"] for p in published}
    hooks = [h.doc for h in webhook.accepted]
    assert hooks == published and webhook.bad_signatures == 0
    assert [h.headers["X-Lockfleet-Seq"] for h in webhook.accepted] == [str(i) for i in range(1, 7)]
    assert webhook.accepted[0].headers["Idempotency-Key"] == f"{published[0]['id']}/1"
    late_id = published[5]["id"]
    am2 = {a["labels"]["finding"]: a for a in alertmanager.alerts()}
    assert set(am2) == {cycle_id, ab_id, late_id}     # this Alertmanager started empty: what it missed
    assert am2[cycle_id]["annotations"]["hosts"] == ", ".join(sorted([*HOSTS, "perf-9"]))
    cycle_grew = next(p for p in published if p["id"] == cycle_id and p["event"] == "grew")
    assert am2[cycle_id]["annotations"]["publication"] == f"{cycle_grew['seq']} grew"

    # the stream of publications: followed across the restart, from the start, and resumed
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    assert [json.loads(x)["seq"] for x in out.splitlines()] == [1, 2, 3, 4, 5, 6]
    watched = [json.loads(x) for x in
               _ok(run_lockfleet("watch", "--json", "--count", "6", "--target", target)).splitlines()]
    assert [(w["seq"], w["event"], w["alert"]["id"]) for w in watched] == \
        [(p["seq"], p["event"], p["id"]) for p in published]
    resumed = [json.loads(x) for x in
               _ok(run_lockfleet("watch", "--json", "--after", "4", "--count", "2", "--target", target)).splitlines()]
    assert [w["seq"] for w in resumed] == [5, 6]

    # 5. one more restart with every sink up: nothing is published or sent again
    server.restart()
    wait_for(lambda: _stats(server)["publishing"]["scans"] >= 1, 30, "the publisher's first look after the restart")
    st = _stats(server)["publishing"]
    assert st["last_seq"] == 6 and st["published"] == 0
    assert all(s["pending"] == 0 for s in st["sinks"].values()), st
    assert len(webhook.accepted) == 6 and alertmanager.received() == 3 and len(_jsonl(server)) == 6

    # unsuppressing the accepted finding publishes it, once, everywhere
    _ok(run_lockfleet("unsuppress", accepted_id, "--target", target))
    wait_for(lambda: len(webhook.accepted) == 7 and alertmanager.received() == 4 and len(_jsonl(server)) == 7, 30,
             "the unsuppressed finding at every sink")
    assert _jsonl(server)[6]["id"] == accepted_id and webhook.accepted[6].doc["event"] == "new"
    proc = run_lockfleet("unsuppress", blessed_id, "--target", target)
    assert proc.returncode == 1 and "blessed order" in proc.stderr


@pytest.mark.parametrize("args, words", [
    (("--alertmanager", "ftp://am:9093"), "--alertmanager"),
    (("--webhook", "not a url"), "--webhook"),
    (("--webhook", "http://127.0.0.1:9/h", "--webhook-secret-file", "{short}"), "at least 16 bytes"),
    (("--webhook-secret-file", "{short}"), "needs a --webhook"),
    (("--blessed", "{blessed}"), "line 2"),
    (("--alertmanager-label", "bad-name=x"), "--alertmanager-label"),
])
def test_serve_refuses_bad_publishing_settings(tmp_path, args, words):
    (tmp_path / "short").write_text("tiny\n")
    (tmp_path / "blessed").write_text("a -> b\nno arrow here\n")
    argv = [a.format(short=tmp_path / "short", blessed=tmp_path / "blessed") for a in args]
    proc = run_lockfleet("serve", "--listen", "127.0.0.1:0", "--data-dir", tmp_path / "d", *argv)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_sigkill_at_random_points_each_sink_gets_each_publication_once(tmp_path, serve_factory, webhook,
                                                                        alertmanager):
    """Rounds of: a new finding pushed, SIGKILL at a random moment (before, during or after its
    delivery), restart. Then every sink is counted. The outbox and the JSONL file hold each
    publication exactly once; WatchAlerts (a client resuming after the last seq it saw) gets each
    once; the webhook and Alertmanager are at-least-once where a kill falls between their 2xx
    and the cursor's save (publisher.py documents it), and a receiver can dedupe exactly: the
    webhook by Idempotency-Key (a repeat has the same body), Alertmanager by its labels."""
    import random

    from conftest import lockfleet_command

    from lockfleet.agent import Stream, push_streams, to_ipc

    rounds = 5
    seed = int(os.environ.get("LOCKFLEET_KILL_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    print(f"kill points from seed {seed} (replay: LOCKFLEET_KILL_SEED={seed})")
    webhook.delay = 0.05                     # widen the window between a delivery and its ack
    server = serve_factory("--webhook", webhook.url, "--webhook-secret-file", _secret(tmp_path),
                           "--alertmanager", alertmanager.url, "--publish-interval", "0.02",
                           "--sink-retry-max", "0.2")
    watcher = subprocess.Popen([*lockfleet_command(), "watch", "--json", "--count", str(rounds), "--retry-for", "90",
                                "--target", server.target], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        want: list[str] = []
        for i in range(rounds):
            a, b = (f"kill{i}_a", f"kill{i}_b")
            ta, tb = events(nest(1, a, b)), events(nest(1, b, a))
            want.append(_finding_id((f"k{i}a", ta), (f"k{i}b", tb)))
            push_streams(server.target, f"k{i}a", [Stream("s", [to_ipc(ta.to_batches()[0])])], retry_for=30)
            push_streams(server.target, f"k{i}b", [Stream("s", [to_ipc(tb.to_batches()[0])])], retry_for=30)
            time.sleep(rng.uniform(0.0, 0.2))   # before, during or after the publisher's work
            server.kill()
            server.start()
        wait_for(lambda: all(s["pending"] == 0 for s in _stats(server)["publishing"]["sinks"].values())
                 and _stats(server)["publishing"]["last_seq"] == rounds, 60, "every sink to catch up")
        out, err = watcher.communicate(timeout=90)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    # the outbox and the JSONL file: each publication once, in order
    published = _jsonl(server)
    assert [p["seq"] for p in published] == list(range(1, rounds + 1))
    assert sorted(p["id"] for p in published) == sorted(want) and {p["event"] for p in published} == {"new"}
    keys = [f"{p['id']}/{p['seq']}" for p in published]
    # WatchAlerts: once each
    assert watcher.returncode == 0, err
    assert [json.loads(x)["seq"] for x in out.splitlines()] == list(range(1, rounds + 1))
    # the webhook: every delivery signed; after deduping by Idempotency-Key, exactly the publications in order
    assert webhook.bad_signatures == 0
    first: dict[str, bytes] = {}
    for d in webhook.accepted:
        key = d.headers["Idempotency-Key"]
        assert first.setdefault(key, d.body) == d.body, f"{key} sent twice with different bodies"
    assert list(first) == keys
    assert [json.loads(body) for body in first.values()] == published
    # Alertmanager: every publication received at least once, one alert per finding (it dedupes by labels)
    received = alertmanager.received()
    am = alertmanager.alerts()
    assert sorted(a["labels"]["finding"] for a in am) == sorted(want)
    assert {a["labels"]["finding"]: a["annotations"]["publication"] for a in am} == \
        {p["id"]: f"{p['seq']} new" for p in published}
    assert received >= rounds
    print(f"{rounds} publications after {rounds} SIGKILLs: webhook {len(webhook.accepted)} deliveries "
          f"({len(webhook.accepted) - rounds} repeats, deduped by key), Alertmanager {received} received "
          f"({received - rounds} repeats, deduped by labels), JSONL {len(published)}, WatchAlerts {len(out.splitlines())}")


def _secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(SECRET)
    return path

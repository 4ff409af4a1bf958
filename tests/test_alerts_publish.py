"""Publishing without a service: the outbox and cursors on disk, the publisher's new/grew decisions,
suppressions and blessed orders, retries of a failing sink, exactly-once across restarts (also a
crash between a JSONL append and its cursor), Alertmanager's alert body, webhook signatures, DOT."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lockfleet import Engine
from conftest import require
from lockfleet.findings.dot import dot_available, finding_dot, svg
from lockfleet.publishing.outbox import Cursors, Outbox, link_kinds
from lockfleet.publishing.publisher import Publisher
from lockfleet.publishing.sinks import (AlertmanagerSink, JsonlSink, Sink, SinkError, alertmanager_alert, signature)
from lockfleet.publishing.suppress import Blessed, Suppressions, SuppressionError, effective
from lockfleet.store.jsonfiles import JsonLines, JsonLinesCorrupt, read_json, write_json_atomic
from receivers import events, nest, wait_for


class Recording(Sink):
    def __init__(self, key: str = "rec") -> None:
        self.key = self.name = key
        self.got: list[dict[str, Any]] = []
        self.failing = False
        self.attempts = 0

    def send(self, publication: dict[str, Any]) -> None:
        self.attempts += 1
        if self.failing:
            raise SinkError("down")
        self.got.append(publication)


class Fleet:
    """An in-memory engine fed by hand; `alerts()` is the publisher's source."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.batches = 0

    def push(self, host: str, rows: list[tuple]) -> None:
        self.engine.ingest(events(rows), host=host)
        self.batches += 1

    def alerts(self):  # noqa: ANN201
        return self.engine.alerts()


def _publisher(tmp: Path, fleet: Fleet, sinks, **kw) -> Publisher:  # noqa: ANN001
    outbox = Outbox(tmp / "publish" / "outbox.jsonl").open()
    cursors = Cursors(tmp / "publish" / "cursors.json").load()
    kw.setdefault("republish_interval", 0.0)
    return Publisher(outbox, cursors, sinks, fleet.alerts, version=lambda: fleet.batches, interval=0.01,
                     retry_initial=0.01, retry_max=0.05, **kw)


def test_new_then_grew_by_host_and_by_kind_then_nothing(tmp_path):
    fleet = Fleet()
    pub = _publisher(tmp_path, fleet, [])
    fleet.push("h1", nest(1, "A", "B"))
    assert pub.scan() == []
    fleet.push("h2", nest(2, "B", "A"))
    (first,) = pub.scan()
    assert (first["seq"], first["event"], first["kind"]) == (1, "new", "circular")
    assert first["alert"]["hosts"] == ["h1", "h2"] and "suppression" not in first["alert"]
    assert "possible circular locking dependency" in first["report"]
    assert pub.scan() == []                               # nothing changed: nothing published
    fleet.push("h1", nest(3, "B", "A"))                   # more of the same: no one cares
    assert pub.scan() == []
    fleet.push("h3", nest(4, "A", "B"))                   # a new host took a link
    (grew,) = pub.scan()
    assert (grew["seq"], grew["event"], grew["new_hosts"], grew["new_kinds"]) == (2, "grew", ["h3"], [])
    fleet.push("h3", nest(5, "A", "B", mode=1))          # A held as a reader: a new kind on A -> B
    (kind,) = pub.scan()
    assert kind["event"] == "grew" and kind["new_hosts"] == [] and kind["new_kinds"] == ["A -> B: SN"]
    assert kind["first_published_ns"] == first["published_ns"]
    # the published evidence comes back from the outbox after a restart: no republication
    pub.outbox.close()
    again = _publisher(tmp_path, fleet, [])
    assert again.outbox.last_seq == 3 and again.scan() == []


def test_growth_is_republished_at_most_once_per_interval(tmp_path):
    """A finding that keeps growing (new witnesses, new hosts) is republished once per interval:
    growth inside it waits, and goes out as one publication when the interval is over."""
    fleet = Fleet()
    pub = _publisher(tmp_path, fleet, [], republish_interval=0.6)
    fleet.push("h1", nest(1, "A", "B"))
    fleet.push("h2", nest(2, "B", "A"))
    (first,) = pub.scan()
    assert first["event"] == "new" and first["witnesses"] == 1
    fleet.push("h3", nest(3, "A", "C"))
    fleet.push("h4", nest(4, "C", "B"))                   # B -> A -> C -> B: a witness, a new host
    assert pub.scan() == []                               # inside the interval: waits
    fleet.push("h5", nest(5, "A", "B"))                   # another new host: still waits
    assert pub.scan() == []
    time.sleep(0.7)
    (grew,) = pub.scan()
    assert grew["event"] == "grew" and grew["witnesses"] == 2
    assert grew["new_hosts"] == ["h3", "h4", "h5"]
    assert pub.scan() == []
    # the publisher's own loop publishes a deferred growth when the interval ends, with no new batch
    fleet.push("h6", nest(6, "A", "B"))
    pub.start()
    try:
        deadline = time.monotonic() + 5
        while pub.outbox.last_seq < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pub.outbox.last_seq == 3
        assert pub.outbox.after(2)[0]["new_hosts"] == ["h6"]
    finally:
        pub.stop(0.1)


def test_suppressed_and_blessed_findings_are_never_published(tmp_path):
    fleet = Fleet()
    sup = Suppressions(tmp_path / "suppressions.json").load()
    blessed = Blessed.parse("# accepted orders\n&sb->s_type->i_mutex_key -> Y   # rename takes it first\n")
    assert blessed.pairs == {("&sb->s_type->i_mutex_key", "Y")}
    pub = _publisher(tmp_path, fleet, [], suppressions=sup, blessed=blessed)
    for host, rows in (("a", nest(1, "A", "B")), ("b", nest(2, "B", "A")),
                       ("c", nest(3, "&sb->s_type->i_mutex_key", "Y")),
                       ("d", nest(4, "Y", "&sb->s_type->i_mutex_key"))):
        fleet.push(host, rows)
    ab, blessed_one = fleet.alerts()
    sup.add(ab.id, "known: A and B are never taken on one CPU", "alice")
    assert pub.scan() == []
    assert effective(ab, sup, blessed).author == "alice"
    why = effective(blessed_one, sup, blessed)
    assert why.blessed and why.reason == "blessed order &sb->s_type->i_mutex_key -> Y"
    assert pub.counts.suppressed == 2
    # persistent: a new store reads it back; removing it publishes the finding (as new) at last
    again = Suppressions(tmp_path / "suppressions.json").load()
    assert again.get(ab.id).reason.startswith("known") and again.get(ab.id).author == "alice"
    assert again.remove(ab.id) is not None and again.remove(ab.id) is None
    pub.suppressions = again
    (rec,) = pub.scan()
    assert rec["id"] == ab.id and rec["event"] == "new"
    with pytest.raises(SuppressionError):
        sup.add(ab.id, "   ", "bob")
    with pytest.raises(SuppressionError, match="line 2"):
        Blessed.parse("A -> B\nA->B\n")


def test_a_dead_sink_is_retried_and_the_others_go_on_and_nothing_is_sent_twice(tmp_path):
    fleet = Fleet()
    good, bad = Recording("good"), Recording("bad")
    bad.failing = True
    pub = _publisher(tmp_path, fleet, [good, bad]).start()
    try:
        fleet.push("h1", nest(1, "A", "B"))
        fleet.push("h2", nest(2, "B", "A"))
        fleet.push("h1", nest(3, "C", "D"))
        fleet.push("h2", nest(4, "D", "C"))
        wait_for(lambda: len(good.got) == 2, 10, "the good sink to get both")
        wait_for(lambda: bad.attempts >= 3, 10, "retries of the dead sink")
        assert bad.got == [] and pub.status()["sinks"]["bad"]["pending"] == 2
        bad.failing = False
        wait_for(lambda: len(bad.got) == 2, 10, "the dead sink to catch up")
    finally:
        pub.stop(flush_seconds=1)
    assert [p["seq"] for p in good.got] == [1, 2] == [p["seq"] for p in bad.got]
    assert Cursors(tmp_path / "publish" / "cursors.json").load().all() == {"good": 2, "bad": 2}
    # a restart resumes from the cursors: nothing is sent again
    good2, bad2 = Recording("good"), Recording("bad")
    pub = _publisher(tmp_path, fleet, [good2, bad2]).start()
    fleet.push("h3", nest(5, "E", "F"))
    fleet.push("h4", nest(6, "F", "E"))
    try:
        wait_for(lambda: len(good2.got) == 1 and len(bad2.got) == 1, 10, "the third finding")
    finally:
        pub.stop(flush_seconds=1)
    assert [p["seq"] for p in good2.got + bad2.got] == [3, 3]


def test_jsonl_sink_never_writes_a_line_twice_after_a_crash_before_its_cursor(tmp_path):
    fleet = Fleet()
    fleet.push("h1", nest(1, "A", "B"))
    fleet.push("h2", nest(2, "B", "A"))
    pub = _publisher(tmp_path, fleet, [])
    pub.scan()
    rec = pub.outbox.after(0)[0]
    sink = JsonlSink(tmp_path / "alerts.jsonl")
    assert sink.recover(0) == 0
    sink.send(rec)             # ... and the process dies before the cursor is saved
    sink.close()
    with open(tmp_path / "alerts.jsonl", "ab") as f:
        f.write(b'{"seq": 2, "torn')      # and a torn line from another crash
    sink = JsonlSink(tmp_path / "alerts.jsonl")
    assert sink.recover(0) == 1            # it sees its own last line: resumes after it
    sink.close()
    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [1]


def test_outbox_cuts_a_torn_tail_and_refuses_damage_before_it(tmp_path):
    path = tmp_path / "o.jsonl"
    f = JsonLines(path)
    assert f.open() == []
    f.append({"seq": 1})
    f.append({"seq": 2})
    f.close()
    with open(path, "ab") as out:
        out.write(b'{"seq": 3')
    f = JsonLines(path)
    assert [r["seq"] for r in f.open()] == [1, 2] and f.torn_bytes == len(b'{"seq": 3')
    f.close()
    path.write_bytes(b'{"seq": 1}\nnot json\n{"seq": 3}\n')
    with pytest.raises(JsonLinesCorrupt, match="line 2"):
        JsonLines(path).open()
    write_json_atomic(tmp_path / "c.json", {"a": 1})
    assert read_json(tmp_path / "c.json", None) == {"a": 1} and not (tmp_path / "c.json.tmp").exists()


def test_watchers_wait_for_the_next_publication(tmp_path):
    fleet = Fleet()
    pub = _publisher(tmp_path, fleet, [])
    got: list[list[dict]] = []
    t = threading.Thread(target=lambda: got.append(pub.outbox.wait_after(0, 10, reader=True)))
    t.start()
    time.sleep(0.05)
    fleet.push("h1", nest(1, "A", "B"))
    fleet.push("h2", nest(2, "B", "A"))
    pub.scan()
    t.join(10)
    assert [r["seq"] for r in got[0]] == [1]
    pub.outbox.close_readers()
    assert pub.outbox.wait_after(1, 10, reader=True) == []       # returns at once
    assert pub.outbox.after(0)[0]["seq"] == 1


def test_alertmanager_alert_has_routable_labels_and_the_report(tmp_path):
    fleet = Fleet()
    fleet.push("h1", nest(1, "A", "B"))
    fleet.push("h2", nest(2, "B", "A"))
    pub = _publisher(tmp_path, fleet, [])
    (rec,) = pub.scan()
    am = alertmanager_alert(rec, {"cluster": "prod"}, ttl_seconds=3600)
    labels = am["labels"]
    assert labels == {"alertname": "LockdepCircularLockingDependency", "kind": "circular",
                      "locks": ",".join(rec["alert"]["locks"]),
                      "severity": "critical", "finding": rec["id"], "service": "lockfleet", "cluster": "prod"}
    assert am["annotations"]["description"] == rec["report"]
    assert "h1, h2" in am["annotations"]["summary"]
    assert am["startsAt"] < am["endsAt"]
    assert AlertmanagerSink("http://am:9093/").url == "http://am:9093/api/v2/alerts"
    assert link_kinds(fleet.alerts()[0]) == {"A -> B: EN", "B -> A: EN"}


def test_webhook_signature_is_hmac_sha256_of_the_body():
    import hashlib
    import hmac

    body = b'{"seq": 1}'
    assert signature(b"k" * 16, body) == "sha256=" + hmac.new(b"k" * 16, body, hashlib.sha256).hexdigest()


def test_dot_marks_the_finding_and_escapes_names(tmp_path):
    fleet = Fleet()
    fleet.push("h1", nest(1, 'we"ird', "B"))
    fleet.push("h2", nest(2, "B", 'we"ird'))
    fleet.push("h2", nest(3, "B", "C"))
    alert = fleet.alerts()[0]
    around = [x for x in fleet.engine.links() if (x.held, x.taken) == ("B", "C")]
    dot = finding_dot(alert, around, {"C": "+.+."})
    assert dot.startswith(f'digraph "{alert.id}" {{') and dot.rstrip().endswith("}")
    assert '"we\\"ird" -> "B"' in dot and "color=red" in dot
    assert '"B" -> "C"' in dot and "grey" in dot and "{+.+.}" in dot
    require(dot_available(), "Graphviz's dot is not on PATH (Debian: apt-get install graphviz): SVG not checked")
    assert "<svg" in svg(dot)

"""The console's own graph layout (used where Graphviz is missing) draws exactly what the DOT of
`lockfleet dot` describes: the same locks, the same dependencies, the finding's own in red with
a cycle's closing one dashed, names escaped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pyarrow as pa

from lockfleet import Engine
from lockfleet.findings.dot import finding_dot
from lockfleet.findings.layout import neighbourhood_svg
from lockfleet.server import graphview

NS = "{http://www.w3.org/2000/svg}"
ODD = '&sb->s_type->i_mutex_key<"x">'


def _engine() -> Engine:
    # t1: A -> B, t2: B -> A (the cycle); t3: C -> A, t4: A -> ODD, t5: ODD -> E (two steps away)
    pairs = [("A", "B"), ("B", "A"), ("C", "A"), ("A", ODD), (ODD, "E")]
    rows: dict[str, list] = {"ts_ns": [], "tid": [], "op": [], "lock": []}
    t = 1_000
    for tid, (x, y) in enumerate(pairs, start=1):
        for op, lock in ((0, x), (0, y), (1, y), (1, x)):
            t += 1
            rows["ts_ns"].append(t)
            rows["tid"].append(tid)
            rows["op"].append(op)
            rows["lock"].append(lock)
    eng = Engine()
    eng.ingest(pa.table({"ts_ns": pa.array(rows["ts_ns"], pa.int64()), "tid": pa.array(rows["tid"], pa.int64()),
                         "op": pa.array(rows["op"], pa.uint8()), "lock": rows["lock"]}), host="h1")
    return eng


def _dot_edges(dot: str) -> set[tuple[str, str]]:
    def unq(s: str) -> str:
        return s.replace('\\"', '"').replace("\\\\", "\\")
    return {(unq(a), unq(b)) for a, b in re.findall(r'^\s*"((?:[^"\\]|\\.)*)" -> "((?:[^"\\]|\\.)*)"', dot, re.M)}


def _svg_edges(root: ET.Element) -> dict[tuple[str, str], ET.Element]:
    out = {}
    for p in root.iter(f"{NS}path"):
        if "dep" in (p.get("class") or "").split():
            held, taken = p.find(f"{NS}title").text.split(" -> ")  # type: ignore[union-attr]
            out[(held, taken)] = p
    return out


def test_builtin_layout_draws_what_the_dot_says():
    eng = _engine()
    (alert,) = [a for a in eng.alerts() if a.kind == "circular"]
    for radius, expect_locks in ((1, {"A", "B", "C", ODD}), (2, {"A", "B", "C", ODD, "E"})):
        links, truncated, usage = graphview.neighbourhood(eng, alert, radius, 60)
        dot = finding_dot(alert, links, usage, truncated)
        root = ET.fromstring(neighbourhood_svg(alert, links, usage, truncated))
        locks = {g.get("data-lock") for g in root.iter(f"{NS}g") if "lock" in (g.get("class") or "").split()}
        assert locks == expect_locks
        edges = _svg_edges(root)
        assert set(edges) == _dot_edges(dot)
        own = {k for k, p in edges.items() if "own" in p.get("class", "").split()}
        assert own == {("A", "B"), ("B", "A")}
        assert sum(1 for k in own if edges[k].get("stroke-dasharray")) == 1
        assert all(not p.get("stroke-dasharray") for k, p in edges.items() if k not in own)
        # every lock's box lies inside the picture
        x0, y0, w, h = map(float, root.get("viewBox").split())  # type: ignore[union-attr]
        for rect in root.iter(f"{NS}rect"):
            x, y = float(rect.get("x")), float(rect.get("y"))  # type: ignore[arg-type]
            assert x0 <= x and x + float(rect.get("width")) <= x0 + w  # type: ignore[arg-type]
            assert y0 <= y and y + float(rect.get("height")) <= y0 + h  # type: ignore[arg-type]


def test_builtin_layout_truncation_and_single_lock():
    eng = _engine()
    (alert,) = [a for a in eng.alerts() if a.kind == "circular"]
    links, truncated, usage = graphview.neighbourhood(eng, alert, 2, 1)
    assert truncated == 2
    text = neighbourhood_svg(alert, links, usage, truncated)
    assert "(2 more dependencies not shown)" in text
    ET.fromstring(text)
    # a finding about one lock, with nothing around it
    rec = Engine()
    rec.ingest(pa.table({"ts_ns": pa.array([1, 2], pa.int64()), "tid": pa.array([1, 1], pa.int64()),
                         "op": pa.array([0, 0], pa.uint8()), "lock": ["L", "L"]}), host="h")
    (one,) = rec.alerts()
    root = ET.fromstring(neighbourhood_svg(one))
    assert [g.get("data-lock") for g in root.iter(f"{NS}g")] == ["L"]

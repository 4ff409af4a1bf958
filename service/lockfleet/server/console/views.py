"""What the web console shows, as JSON-ready dicts: read from the gateway (serialised with ingest,
each read short) and the publishing state, exactly as the Query service reads them; the HTTP side
(`http.py`) only routes, authenticates and streams.
"""

from __future__ import annotations

import time
from typing import Any

from ...errors import UsageError
from ...findings.dot import dot_available, finding_dot, svg
from ...findings.layout import neighbourhood_svg
from ...findings.model import KINDS, Alert, Link, matches
from ...publishing.suppress import Suppression
from .. import graphview
from ..gateway import Gateway
from ..publishing import Publishing


class NotFound(UsageError, LookupError):
    """No such finding, lock or suppression."""


def _link(link: Link) -> dict[str, Any]:
    return link.to_dict()


class ConsoleViews:
    def __init__(self, gateway: Gateway, publishing: Publishing) -> None:
        self.gateway = gateway
        self.publishing = publishing

    # -- findings ---------------------------------------------------------------------------

    def _summary(self, a: Alert, sup: Suppression | None) -> dict[str, Any]:
        pub = self.publishing.outbox.published(a.id)
        return {"id": a.id, "kind": a.kind, "locks": list(a.locks), "hosts": list(a.hosts), "count": a.count,
                "first_ts_ns": a.first_ts_ns, "seq": a.seq,
                "published_ns": pub.first_published_ns if pub else 0,
                "suppression": sup.to_dict() if sup else None}

    def findings(self, kind: str = "", host: str = "", lock: str = "", since_ns: int = 0, until_ns: int = 0,
                 hide_suppressed: bool = False) -> dict[str, Any]:
        """Findings newest first (by the order they were raised), filtered; and what the filters
        can choose from."""
        if kind and kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; one of: {', '.join(KINDS)}")
        if since_ns and until_ns and until_ns <= since_ns:
            raise ValueError("'until' must be after 'since'")
        alerts = self.gateway.read(lambda eng: list(eng.alerts()))
        out = []
        for a in sorted(alerts, key=lambda a: -a.seq):
            if not matches(a, kind, host, lock, since_ns, until_ns):
                continue
            sup = self.publishing.suppression_of(a)
            if sup is not None and hide_suppressed:
                continue
            out.append(self._summary(a, sup))
        return {"findings": out, "total": len(alerts), "kinds": list(KINDS),
                "hosts": sorted({h for a in alerts for h in a.hosts} | set(self.gateway.hosts())),
                "locks": sorted({n for a in alerts for n in a.locks}),
                "last_seq": self.publishing.outbox.last_seq}

    def finding(self, finding_id: str) -> dict[str, Any]:
        """One finding: its report, evidence, witnesses, suppression and publication."""
        found = self.gateway.read(lambda eng: (eng.alert(finding_id), graphview.witnesses(eng, finding_id)))
        alert, witnesses = found
        if alert is None:
            raise NotFound(f"no finding {finding_id!r}")
        sup = self.publishing.suppression_of(alert)
        pub = self.publishing.outbox.published(alert.id)
        data = alert.to_dict()
        # `witnesses` (the count) and `witnesses_kept` are Alert.to_dict()'s; the cycles kept go beside
        data.update(report=alert.render(), witness_cycles=witnesses,
                    suppression=sup.to_dict() if sup else None,
                    published={"first_ns": pub.first_published_ns, "last_seq": pub.last_seq} if pub else None,
                    usage_strings=dict(alert.usage_strings))
        return data

    def graph_svg(self, finding_id: str, radius: int = 1, max_edges: int = 60, layout: str = "auto"
                  ) -> tuple[str, str]:
        """The finding's neighbourhood as SVG, and who drew it ("graphviz" or "builtin")."""
        def read(eng):  # type: ignore[no-untyped-def]
            alert = eng.alert(finding_id)
            return None if alert is None else (alert, graphview.neighbourhood(eng, alert, radius, max_edges))

        found = self.gateway.read(read)
        if found is None:
            raise NotFound(f"no finding {finding_id!r}")
        alert, (links, truncated, usage) = found
        if layout != "builtin" and dot_available():
            try:
                return svg(finding_dot(alert, links, usage, truncated), timeout=20), "graphviz"
            except (RuntimeError, OSError):
                pass   # a Graphviz that fails: draw it ourselves
        return neighbourhood_svg(alert, links, usage, truncated), "builtin"

    # -- the graph and the fleet ------------------------------------------------------------

    def lock(self, name: str) -> dict[str, Any]:
        view = self.gateway.read(lambda eng: graphview.lock_view(eng, name))
        if view is None:
            raise NotFound(f"no lock class {name!r}")
        return {"name": view.name, "usage": view.usage,
                "usages": [{"usage": u.usage, "host": u.first.host, "task": u.first.task, "ts_ns": u.first.ts_ns,
                            "site": u.first.site} for u in view.usages],
                "edges_in": [_link(x) for x in view.edges_in], "edges_out": [_link(x) for x in view.edges_out],
                "hosts": list(view.hosts), "first_ts_ns": view.first_ts_ns, "last_ts_ns": view.last_ts_ns,
                "count": view.count, "findings": list(view.alerts)}

    def hosts(self) -> dict[str, Any]:
        alerts = self.gateway.read(lambda eng: [(a.id, a.kind, a.hosts) for a in eng.alerts()])
        hosts = self.gateway.hosts()
        out = []
        for name in sorted(hosts):
            h = hosts[name]
            out.append({"host": name, **h, "findings": [{"id": i, "kind": k} for i, k, hs in alerts if name in hs]})
        return {"hosts": out, "now_ns": time.time_ns()}

    def stats(self) -> dict[str, Any]:
        st = dict(self.gateway.read(lambda eng: eng.stats()))
        return {"engine": {k: int(v) if hasattr(v, "__int__") else v for k, v in st.items()},
                "ingest": self.gateway.ingest_stats(), "publishing": self.publishing.status()}

    # -- suppressions -----------------------------------------------------------------------

    def suppressions(self) -> dict[str, Any]:
        return {"suppressions": [s.to_dict() for s in self.publishing.suppressions.all()],
                "blessed": self.publishing.blessed.orders()}

    def suppress(self, finding_id: str, reason: str, author: str) -> dict[str, Any]:
        """Record a suppression (raises SuppressionError on an empty id or reason, OSError when it
        cannot be saved)."""
        s = self.publishing.suppressions.add(finding_id, reason, author)
        known = self.gateway.read(lambda eng: eng.alert(finding_id) is not None)
        self.publishing.wake()
        return {"suppression": s.to_dict(), "known": known}

    def unsuppress(self, finding_id: str) -> dict[str, Any]:
        s = self.publishing.suppressions.remove(finding_id)
        if s is None:
            raise NotFound(f"no suppression recorded for {finding_id!r}")
        self.publishing.wake()
        return {"unsuppressed": s.to_dict()}


"""`lockfleet diff OLD NEW`: what NEW has that OLD had not (lock classes, dependencies, kinds of a
dependency, findings), e.g. the archive after a kernel upgrade against the one before it; and, for
completeness, what is gone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..events import RELEASE
from ..findings.model import Alert
from .aggregates import class_name, edges_frame, events_frame
from .analysis import Analysis, analyze
from .scan import Selection


@dataclass
class Side:
    analysis: Analysis
    classes: set[str]
    edges: pl.DataFrame          # aggregates.edges_frame

    @property
    def pairs(self) -> dict[tuple[str, str], set[str]]:
        return {(h, t): set(k.split(",")) if k else set()
                for h, t, k in self.edges.select("held", "taken", "kinds").iter_rows()}

    def summary(self) -> dict:
        return {"events": self.analysis.events, "files": self.analysis.plan.files, "classes": len(self.classes),
                "dependencies": self.edges.height, "findings": len(self.analysis.alerts)}


def side(paths: list[str | Path], selection: Selection, progress: bool = False) -> Side:
    a = analyze(paths, selection, aggregates=False, progress=progress)
    ev = events_frame(a.plan, selection)
    classes = (ev.filter(pl.col("op") != RELEASE).select("lock", "subclass").unique()
               .select(class_name()).collect(engine="streaming"))
    return Side(analysis=a, classes=set(classes["class"].to_list()), edges=edges_frame(a.engine))


@dataclass
class Diff:
    old: Side
    new: Side

    @property
    def new_classes(self) -> list[str]:
        return sorted(self.new.classes - self.old.classes)

    @property
    def gone_classes(self) -> list[str]:
        return sorted(self.old.classes - self.new.classes)

    def _edge_rows(self, side: Side, pairs: set[tuple[str, str]]) -> list[dict]:
        if not pairs:
            return []
        keys = pl.DataFrame({"held": [p[0] for p in pairs], "taken": [p[1] for p in pairs]})
        return (side.edges.join(keys, on=["held", "taken"], how="semi").drop("host_list")
                .sort(["count", "held", "taken"], descending=[True, False, False]).to_dicts())

    @property
    def new_dependencies(self) -> list[dict]:
        return self._edge_rows(self.new, set(self.new.pairs) - set(self.old.pairs))

    @property
    def gone_dependencies(self) -> list[dict]:
        return self._edge_rows(self.old, set(self.old.pairs) - set(self.new.pairs))

    @property
    def new_kinds(self) -> list[dict]:
        """Dependencies in both whose NEW side has kinds OLD never saw (e.g. a reader became a writer)."""
        old, out = self.old.pairs, []
        for (h, t), kinds in sorted(self.new.pairs.items()):
            if (h, t) in old and kinds - old[(h, t)]:
                out.append({"held": h, "taken": t, "old_kinds": sorted(old[(h, t)]),
                            "new_kinds": sorted(kinds - old[(h, t)])})
        return out

    @property
    def new_findings(self) -> list[Alert]:
        old = {a.id for a in self.old.analysis.alerts}
        return [a for a in self.new.analysis.alerts if a.id not in old]

    @property
    def gone_findings(self) -> list[Alert]:
        new = {a.id for a in self.new.analysis.alerts}
        return [a for a in self.old.analysis.alerts if a.id not in new]

    def to_dict(self) -> dict:
        return {
            "old": self.old.summary(),
            "new": self.new.summary(),
            "new_classes": self.new_classes,
            "new_dependencies": self.new_dependencies,
            "new_kinds": self.new_kinds,
            "new_findings": [a.to_dict() for a in self.new_findings],
            "gone_classes": self.gone_classes,
            "gone_dependencies": self.gone_dependencies,
            "gone_findings": [a.id for a in self.gone_findings],
        }


def diff(old: list[str | Path], new: list[str | Path], old_selection: Selection = Selection(),
         new_selection: Selection = Selection(), progress: bool = False) -> Diff:
    return Diff(old=side(old, old_selection, progress), new=side(new, new_selection, progress))

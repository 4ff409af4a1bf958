"""Findings, pure (no I/O, nothing above the engine): the model (`model`), lockdep-style text
(`render`), Graphviz DOT (`dot`) and the console's SVG layout (`layout`). Their publishing (outbox,
sinks, suppressions, publisher threads) lives in `lockfleet.publishing`."""

from .model import KINDS, Alert, Link, Occurrence, Usage

__all__ = ["KINDS", "Alert", "Link", "Occurrence", "Usage"]

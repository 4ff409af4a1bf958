"""Findings: the model (`model`), lockdep-style text (`render`), Graphviz DOT (`dot`), and their
publishing: the durable outbox and sink cursors (`outbox`), the sinks (`sinks`: JSONL, Alertmanager,
webhook), suppressions and blessed orders (`suppress`), and the publisher threads (`publisher`)."""

from .model import KINDS, Alert, Link, Occurrence, Usage

__all__ = ["KINDS", "Alert", "Link", "Occurrence", "Usage"]

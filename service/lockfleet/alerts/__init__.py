"""Findings: the model (`model`), lockdep-style text (`render`)."""

from .model import KINDS, Alert, Link, Occurrence, Usage

__all__ = ["KINDS", "Alert", "Link", "Occurrence", "Usage"]

"""The web console of `lockfleet serve --http HOST:PORT`: findings, a finding's report, evidence,
witnesses and neighbourhood graph, lock classes, hosts and suppressions, updated live."""

from .http import ConsoleServer
from .views import ConsoleViews, NotFound

__all__ = ["ConsoleServer", "ConsoleViews", "NotFound"]

"""The local web dashboard: the mesh, its authority and its predictions, live, in a browser.

Served by the agent itself from its own event loop (no thread, no framework): :mod:`.http`
parses requests and holds the security rules (pure, tested alone), :mod:`.auth` the token
tied to the local user, :mod:`.live` the change-driven server-sent-event feed,
:mod:`.snapshot` what the page shows (read through the control commands, never around them)
and :mod:`.server` the asyncio adapter with the routes. The page itself is static HTML, CSS
and JavaScript in ``static/`` (no build chain, no third-party request).
"""

from agent.dashboard.server import Dashboard

__all__ = ["Dashboard"]

"""Prefetch and mirrors: the mesh acts on its predictions (issue 11 items 1 and 2).

* :mod:`agent.mirrors.planner` — the prefetch planner (pure): predictions, temperature,
  storage and link state in, jobs out (prefetch, evict, cancel).
* :mod:`agent.mirrors.policy` — the Resource Mirror Manager's rules (pure): where to mirror,
  when to expand, shrink, move or discard, and which devices share one mirror.
* :mod:`agent.mirrors.hosting` — the host side's bounded ledger of mirrors held for peers.
* :mod:`agent.mirrors.stats` — hit statistics from the access log.
* :mod:`agent.mirrors.service` — the asyncio adapter that runs the rules and executes jobs
  through the fetch service in the ``prefetch`` and ``mirror`` bandwidth classes.

One package rather than ``prefetch`` + ``mirrors`` side by side: the service executes both
kinds of job, and two rank-4 packages may not import each other (tests/test_agent_layering.py).
"""

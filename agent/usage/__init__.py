"""Usage: what every device learns about the requests it sees, and what it may share.

Why a package of its own: the prediction engine (docs/architecture.md, issue 10) needs an
access history on every device, a resource *temperature* (decayed access frequency), and a
way for devices to learn together without raw request sequences leaving any of them. The
modules split along the layering rule:

* pure cores (rank 2, no peers, no asyncio): :mod:`.record` (the binary access record and
  its checksummed frame), :mod:`.requester` (the keyed, rotating requester hash),
  :mod:`.ngrams` (n-gram statistics and the privacy release), :mod:`.aggregate` (the shared
  aggregate's strict schema and the bounded merge), :mod:`.temperature` (decayed frequency
  and the prefetch budget), :mod:`.lifecycle` (who trains a model, when, which to use);
* one file adapter in the same rank: :mod:`.accesslog` (append-only segments);
* one service at the peer-service rank (4): :mod:`.service` (recording port, flushing,
  periodic sharing over paired sessions, the ``usage`` peer operation).

This ``__init__`` imports nothing so that the core never pulls the service in.
"""

"""Kademlia-style discovery: which devices hold a resource, in a mesh too large to ask everyone.

Pure and sans-I/O (a rank-1 layer like agent.predict): XOR distance over 256-bit device IDs
(keyspace), k-buckets with least-recently-seen eviction (routing), signed and bounded provider
records (records), strictly parsed messages (messages), the alpha-parallel iterative lookup
(lookup) and one node's request handling (node). Time and randomness are passed in; signing
and verifying are injected callables, so the core never imports agent.security. sim runs many
nodes in virtual time for tests and bench/dht.py. See docs/dht.md.
"""

"""The peer protocol: wire format, one connection per peer, the peer table, and the
connections subsystem that opens, accepts and tracks sessions over any link."""

"""Multi-hop reach: circuits through paired intermediates carrying end-to-end Noise sessions.

``circuits.py`` is the pure core (routing decisions, limits, frame rules), ``channel.py``
the end-to-end session inside a circuit, ``service.py`` the asyncio service the node wires.
"""

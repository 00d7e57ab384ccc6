"""`shoal doctor`: what on this machine stops Shoal from working, why, and how to fix it.

Split in three so the judgement is testable without the hardware: :mod:`.probes` asks the
machine (sysfs, D-Bus, wpa_supplicant's control socket, nft, systemd) and returns plain
data (:class:`.state.Machine`); :mod:`.checks` turns that data and the configuration into
findings without any I/O; :mod:`.report` prints them. Tests inject a ``Machine`` that
describes the machine they want (no adapter, a firewall dropping the port, a full disk).
"""

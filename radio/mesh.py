"""The mesh ID: which Shoal mesh an agent belongs to.

Agents only discover, dial and accept sessions from agents of their own mesh, so two meshes
on one LAN (two households, two test runs on one machine) stay apart. The ID is published in
the mDNS TXT record (:mod:`radio.lan`, key ``mesh``) and carried in the session hello
(``agent.peer.hello``, key ``mesh``). A record or hello without the key comes from an agent
that predates mesh IDs and counts as :data:`DEFAULT_MESH`, which is also the default setting,
so ordinary installations on one LAN keep finding each other.

The ID is a label, not a secret: anyone on the LAN can read it from the TXT record. Keeping
strangers out is pairing's job; the mesh ID keeps well-meaning agents from pairing or
auto-dialling across meshes by accident.

This module never imports :mod:`agent`.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_MESH", "MESH_FORM", "MESH_MAX_LEN", "MESH_RE", "check_mesh"]

DEFAULT_MESH = "shoal"
MESH_MAX_LEN = 32
# Printable ASCII without spaces, quotes or escapes: safe in a TXT value, a JSON hello, a TOML
# string, a log line and a shell argument. Compared exactly (case-sensitive).
MESH_RE = re.compile(rf"[A-Za-z0-9._-]{{1,{MESH_MAX_LEN}}}")
MESH_FORM = f"1-{MESH_MAX_LEN} characters of A-Z, a-z, 0-9, '.', '_', '-'"


def check_mesh(mesh: str) -> str:
    """Return *mesh* if it is a valid mesh ID, else raise ValueError naming the form."""
    if not isinstance(mesh, str) or not MESH_RE.fullmatch(mesh):
        raise ValueError(f"mesh ID must be {MESH_FORM}: {mesh!r}")
    return mesh

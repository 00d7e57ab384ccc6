"""`shoal service install | uninstall | status`: Shoal as a systemd service.

The unit, sysusers.d, tmpfiles.d and D-Bus policy files ship inside the package
(``agent/service/files``) so a pip install has them as well as a clone; :mod:`.units`
renders them for the interpreter Shoal runs from (pure), :mod:`.install` writes them under
a root directory and drives systemctl.
"""

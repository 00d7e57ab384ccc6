#!/bin/bash
# Runs inside the systemd-nspawn container as a oneshot unit (shoaltest.service): installs
# Shoal with `shoal service install`, then checks READY, `shoal status`, restart after
# SIGKILL, watchdog restart of a frozen (SIGSTOPped) agent and a clean stop. Everything it
# sees goes to /results for tests/service/test_container.py to assert on; it never fails
# early, so one broken step still leaves the others' results.
exec >/results/driver.log 2>&1
set -x
PY="$1"
REPO="$2"
shoal() { "$PY" -m agent "$@"; }
prop() { systemctl show -p "$1" --value shoal.service; }
wait_for() {  # wait_for SECONDS CMD...: until CMD succeeds
  local end=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -ge $end ] && return 1; sleep 0.5; done
}
# The container's /root is a fresh 0700 tmpfs directory: the interpreter of this checkout
# lives under it (pyenv), so let the service user traverse it, as a real install under
# /opt or /usr would allow anyway.
chmod 755 /root
# Shorter watchdog and abort timeouts than the shipped unit, only so the test is quick.
mkdir -p /etc/systemd/system/shoal.service.d
printf '[Service]\nWatchdogSec=4\nTimeoutAbortSec=3\nRestartSec=1\n' \
  >/etc/systemd/system/shoal.service.d/test.conf

shoal service install --json >/results/install.json
echo $? >/results/install.rc
systemctl show shoal.service -p ActiveState,SubState,MainPID,NRestarts,StatusText,Result \
  >/results/after-install.txt
shoal status --json >/results/status.json
echo $? >/results/status.rc
shoal service status --json >/results/service-status.json
# another user is refused with a one-line error naming what to do (the socket is 0600 and
# the agent accepts only root and its own user)
useradd --create-home tester
setpriv --reuid=tester --regid="$(id -g tester)" --init-groups env HOME=/home/tester \
  "$PY" -m agent status >/results/status-other.out 2>&1
echo $? >/results/status-other.rc

# 1. SIGKILL the main process: Restart=on-failure brings it back
first=$(prop MainPID)
kill -KILL "$first"
wait_for 60 bash -c "[ \"\$(systemctl show -p MainPID --value shoal)\" != \"$first\" ] &&
  [ \"\$(systemctl show -p MainPID --value shoal)\" != 0 ] &&
  [ \"\$(systemctl show -p ActiveState --value shoal)\" = active ]"
echo "$first $(prop MainPID) $(prop NRestarts) $(prop ActiveState)" >/results/after-kill.txt

# 2. Freeze the agent (SIGSTOP: its event loop stops pinging): the watchdog restarts it
second=$(prop MainPID)
kill -STOP "$second"
wait_for 90 bash -c "[ \"\$(systemctl show -p MainPID --value shoal)\" != \"$second\" ] &&
  [ \"\$(systemctl show -p MainPID --value shoal)\" != 0 ] &&
  [ \"\$(systemctl show -p ActiveState --value shoal)\" = active ]"
echo "$second $(prop MainPID) $(prop NRestarts) $(prop ActiveState)" >/results/after-stop.txt
shoal status --json >/results/status-after-watchdog.json

# 3. A clean stop
systemctl stop shoal.service
echo "$? $(prop ActiveState) $(prop Result) $(prop ExecMainStatus)" >/results/after-stop-clean.txt
shoal doctor --json >/results/doctor.json
journalctl -u shoal.service --no-pager -o short-monotonic >/results/journal.txt
systemd-analyze security shoal.service >/results/security.txt 2>&1

# 4. Uninstall (data kept), then install again from a pip-style install in /opt/shoal: the
#    package in that venv's site-packages (what `pip install shoal` leaves), not this checkout
shoal service uninstall --json >/results/uninstall.json
"$PY" -m venv --without-pip /opt/shoal
site=$(/opt/shoal/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp -r "$REPO/agent" "$REPO/radio" "$site/"
"$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$site/shoal-deps.pth"
/opt/shoal/bin/python -m agent service install --json >/results/install-pip.json
echo $? >/results/install-pip.rc
grep -E '^(ExecStart|Environment=PYTHONPATH)' /etc/systemd/system/shoal.service \
  >/results/unit-pip.txt
/opt/shoal/bin/python -m agent status --json >/results/status-pip.json
/opt/shoal/bin/python -m agent service uninstall --purge --json >/results/purge.json
{ [ -e /var/lib/shoal ] && echo data-present; [ -e /etc/shoal ] && echo config-present
  getent passwd shoal >/dev/null && echo user-present; echo end; } >/results/after-purge.txt
touch /results/done
systemctl poweroff --no-block

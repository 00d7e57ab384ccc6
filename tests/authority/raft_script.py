"""A tiny etcd-style interaction DSL for Raft scenarios (tests/authority/testdata/*.txt).

File format: blocks of

    command arg key=value
    ----
    expected output (exact)
    <blank line>

Lines starting with '#' and blank lines between blocks are kept verbatim. `render(text)`
re-executes every command and returns the file with the *actual* output, so a test is
"render(file) == file" and SHOAL_REWRITE=1 regenerates the expectations (review the diff!).

Commands:
  add-nodes N [voters=1,2,3] [learners=4] [join=true] [prevote=..] [checkquorum=..] [seed=..]
  campaign ID | propose ID DATA | propose-conf-change ID OP NODE
  transfer-leadership from=ID to=ID | compact ID
  tick ID [N] | tick-election ID | tick-heartbeat ID
  process-ready ID... | deliver-msgs [ID...] | stabilize [ID...]
  isolate ID | cut A B | heal | drop-msgs
  raft-state | raft-log ID | status ID
"""

from __future__ import annotations

from collections.abc import Callable

from raft_harness import Cluster, state_name

from agent.authority.raft import RaftError, describe_entry
from agent.authority.raft.messages import describe_snapshot


def _bool(v: str) -> bool:
    if v not in ("true", "false"):
        raise ValueError(f"expected true/false, got {v!r}")
    return v == "true"


class Script:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.cluster: Cluster | None = None

    @property
    def c(self) -> Cluster:
        if self.cluster is None:
            raise ValueError("add-nodes first")
        return self.cluster

    def run(self, line: str) -> list[str]:
        self.out = []
        if self.cluster is not None:
            self.cluster.out = self.out.append
        words = line.split()
        cmd, args = words[0], words[1:]
        pos = [a for a in args if "=" not in a]
        kw = dict(a.split("=", 1) for a in args if "=" in a)
        handler: Callable[[list[str], dict[str, str]], None] | None = getattr(
            self, "cmd_" + cmd.replace("-", "_"), None
        )
        if handler is None:
            raise ValueError(f"unknown command {cmd!r}")
        try:
            handler(pos, kw)
        except (RaftError, ValueError) as exc:
            self.out.append(f"ERROR: {exc}")
        return self.out or ["ok"]

    # --- setup -------------------------------------------------------------------------
    def cmd_add_nodes(self, pos: list[str], kw: dict[str, str]) -> None:
        n = int(pos[0])
        if self.cluster is None:
            raft_kwargs = {
                "pre_vote": _bool(kw.get("prevote", "true")),
                "check_quorum": _bool(kw.get("checkquorum", "true")),
                "election_tick": int(kw.get("election", "10")),
                "heartbeat_tick": int(kw.get("heartbeat", "1")),
            }
            self.cluster = Cluster(
                seed=int(kw.get("seed", "0")), out=self.out.append, **raft_kwargs
            )
        c = self.c
        first = len(c.nodes) + 1
        ids = [str(i) for i in range(first, first + n)]
        if _bool(kw.get("join", "false")):
            c.add_nodes(ids)
        else:
            voters = kw["voters"].split(",") if "voters" in kw else ids
            learners = kw["learners"].split(",") if "learners" in kw else []
            c.add_nodes(ids, voters=voters, learners=learners)

    # --- actions -----------------------------------------------------------------------
    def cmd_campaign(self, pos: list[str], kw: dict[str, str]) -> None:
        self.c[pos[0]].campaign()

    def cmd_propose(self, pos: list[str], kw: dict[str, str]) -> None:
        idx = self.c[pos[0]].propose(pos[1].encode())
        self.out.append(f"index {idx}")

    def cmd_propose_conf_change(self, pos: list[str], kw: dict[str, str]) -> None:
        idx = self.c[pos[0]].propose_conf_change(pos[1], pos[2])
        self.out.append(f"index {idx}")

    def cmd_transfer_leadership(self, pos: list[str], kw: dict[str, str]) -> None:
        self.c[kw["from"]].transfer_leadership(kw["to"])

    def cmd_compact(self, pos: list[str], kw: dict[str, str]) -> None:
        node = self.c[pos[0]]
        snap = node.compact(node.applied_index, self.c.apps[pos[0]].snapshot())
        self.out.append(f"compacted through {snap.index} (term {snap.term})")

    def cmd_tick(self, pos: list[str], kw: dict[str, str]) -> None:
        self.c.tick(pos[0], int(pos[1]) if len(pos) > 1 else 1)

    def cmd_tick_election(self, pos: list[str], kw: dict[str, str]) -> None:
        self.c.tick_election(pos[0])

    def cmd_tick_heartbeat(self, pos: list[str], kw: dict[str, str]) -> None:
        self.c.tick(pos[0], self.c[pos[0]].heartbeat_tick)

    def cmd_process_ready(self, pos: list[str], kw: dict[str, str]) -> None:
        for nid in pos:
            self.c.process_ready(nid)

    def cmd_deliver_msgs(self, pos: list[str], kw: dict[str, str]) -> None:
        self.c.deliver(pos or None)

    def cmd_stabilize(self, pos: list[str], kw: dict[str, str]) -> None:
        self.c.stabilize(pos or None)

    def cmd_isolate(self, pos: list[str], kw: dict[str, str]) -> None:
        self.c.isolate(pos[0])

    def cmd_cut(self, pos: list[str], kw: dict[str, str]) -> None:
        self.c.cut(pos[0], pos[1])

    def cmd_heal(self, pos: list[str], kw: dict[str, str]) -> None:
        self.c.heal()

    def cmd_drop_msgs(self, pos: list[str], kw: dict[str, str]) -> None:
        self.out.append(f"dropped {len(self.c.pending)} messages")
        self.c.drop_pending()

    # --- inspection --------------------------------------------------------------------
    def cmd_raft_state(self, pos: list[str], kw: dict[str, str]) -> None:
        for nid, n in sorted(self.c.nodes.items(), key=lambda kv: int(kv[0])):
            role = "Voter" if nid in n.voters else "Learner" if nid in n.learners else "NonMember"
            self.out.append(
                f"{nid}: {state_name(n.state)} ({role}) Term:{n.term} Lead:{n.lead or 0}"
                f" Commit:{n.commit_index} Applied:{n.applied_index} Last:{n.last_index}"
            )

    def cmd_raft_log(self, pos: list[str], kw: dict[str, str]) -> None:
        n = self.c[pos[0]]
        snap = n.log.snapshot()
        if snap.index:
            self.out.append("Snapshot " + describe_snapshot(snap))
        for e in n.log.entries(n.log.first_index(), n.last_index + 1):
            self.out.append(describe_entry(e))
        if not self.out:
            self.out.append("log is empty")

    def cmd_status(self, pos: list[str], kw: dict[str, str]) -> None:
        st = self.c[pos[0]].status()
        if not st.progress:
            self.out.append(f"{st.id} is not the leader")
        for nid, p in sorted(st.progress.items(), key=lambda kv: int(kv[0])):
            flags = " learner" if p.is_learner else ""
            flags += " paused" if p.paused else ""
            self.out.append(
                f"{nid}: State{p.state.value.capitalize()} match={p.match} next={p.next}{flags}"
            )


def render(text: str) -> str:
    """Execute a script file and return it with the actual outputs filled in."""
    script = Script()
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            out.append(line)
            i += 1
            continue
        i += 1
        if i >= len(lines) or lines[i] != "----":
            raise ValueError(f"line {i}: expected '----' after command {line!r}")
        i += 1
        while i < len(lines) and lines[i] != "":
            i += 1
        out += [line, "----", *script.run(line)]
    return "\n".join(out) + "\n"

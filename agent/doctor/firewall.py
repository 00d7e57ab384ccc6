"""Would the firewall let a peer reach this port? A pure reading of `nft -j list ruleset`.

Only what can be decided from the rules is decided: the input base chains are walked in
order; a rule that matches nothing but this port (and perhaps the interface) decides; an
unconditional accept/drop decides; a rule with other conditions (a source address, a
connection state) is noted as "restricted" and skipped; the chain's policy decides last.
iptables on current distributions is iptables-nft, so its rules are in the same ruleset.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    OPEN = "open"
    BLOCKED = "blocked"
    RESTRICTED = "restricted"  # accepted only under conditions (a source, a state)
    UNKNOWN = "unknown"


def _items(ruleset: object) -> Iterator[Mapping[str, Any]]:
    if not isinstance(ruleset, Mapping):
        return
    items = ruleset.get("nftables")
    for item in items if isinstance(items, list) else ():
        if isinstance(item, Mapping):
            yield item


def _port_in(right: object, port: int) -> bool:
    if isinstance(right, bool):
        return False
    if isinstance(right, int):
        return right == port
    if isinstance(right, Mapping):
        if "set" in right:
            return isinstance(right["set"], list) and any(_port_in(x, port)
                                                          for x in right["set"])
        if "range" in right:
            lo_hi = right["range"]
            return (isinstance(lo_hi, list) and len(lo_hi) == 2
                    and all(isinstance(x, int) for x in lo_hi) and lo_hi[0] <= port <= lo_hi[1])
    if isinstance(right, list):
        return any(_port_in(x, port) for x in right)
    return False


def _match_kind(match: Mapping[str, Any], port: int, proto: str) -> str:
    """"port" (matches our port), "other-port", "neutral" (an interface) or "condition"."""
    left = match.get("left")
    payload = left.get("payload") if isinstance(left, Mapping) else None
    if isinstance(payload, Mapping) and payload.get("field") == "dport":
        if payload.get("protocol") not in (proto, "th", None):
            return "other-port"
        if match.get("op", "==") in ("==", "in") and _port_in(match.get("right"), port):
            return "port"
        return "other-port"
    if isinstance(left, Mapping) and isinstance(left.get("ct"), Mapping) and \
            left["ct"].get("key") == "state":
        right = match.get("right")
        states = right if isinstance(right, list) else [right]
        # established/related rules never admit a peer's first packet
        return "neutral" if "new" in states else "other-port"
    if isinstance(left, Mapping) and "meta" in left:
        key = left["meta"].get("key") if isinstance(left["meta"], Mapping) else None
        if key in ("iifname", "iif"):  # loopback-only rules never see a peer's packets
            return "other-port" if match.get("right") == "lo" else "neutral"
        if key == "l4proto":
            right = match.get("right")
            names = right.get("set") if isinstance(right, Mapping) else [right]
            return "neutral" if isinstance(names, list) and proto in names else "other-port"
    return "condition"


def _rule_verdict(exprs: list[Any], port: int, proto: str) -> tuple[str, str | None]:
    """(how the rule relates to the port, its verdict: accept/drop/reject/None)."""
    kinds: list[str] = []
    verdict: str | None = None
    for e in exprs:
        if not isinstance(e, Mapping):
            continue
        if "match" in e and isinstance(e["match"], Mapping):
            kinds.append(_match_kind(e["match"], port, proto))
        for v in ("accept", "drop", "reject"):
            if v in e:
                verdict = v
        if "jump" in e or "goto" in e:
            kinds.append("condition")  # another chain decides: not followed here
    if "other-port" in kinds:
        return "other", verdict
    if "condition" in kinds:
        return "conditional", verdict
    return ("port" if "port" in kinds else "all"), verdict


def port_verdict(ruleset: object, port: int, proto: str = "tcp") -> Verdict:
    """Whether *ruleset* lets a packet to *port*/*proto* through the input hooks."""
    chains: dict[tuple[str, str, str], str] = {}
    rules: dict[tuple[str, str, str], list[list[Any]]] = {}
    for item in _items(ruleset):
        chain = item.get("chain")
        if isinstance(chain, Mapping) and chain.get("hook") == "input" and \
                chain.get("family") in ("ip", "ip6", "inet"):
            key = (str(chain["family"]), str(chain.get("table")), str(chain.get("name")))
            chains[key] = str(chain.get("policy", "accept"))
        rule = item.get("rule")
        if isinstance(rule, Mapping) and isinstance(rule.get("expr"), list):
            key = (str(rule.get("family")), str(rule.get("table")), str(rule.get("chain")))
            rules.setdefault(key, []).append(rule["expr"])
    if not chains:
        return Verdict.OPEN  # no input hook at all: nothing filters
    outcome = Verdict.OPEN
    for key, policy in chains.items():
        verdict = _chain(rules.get(key, []), policy, port, proto)
        if verdict is Verdict.BLOCKED:
            return Verdict.BLOCKED  # every input chain must let it through
        if verdict is Verdict.RESTRICTED:
            outcome = Verdict.RESTRICTED
    return outcome


def _chain(rules: list[list[Any]], policy: str, port: int, proto: str) -> Verdict:
    restricted = False
    for exprs in rules:
        relation, verdict = _rule_verdict(exprs, port, proto)
        if verdict is None or relation == "other":
            continue
        if relation == "conditional":
            restricted = restricted or verdict == "accept"
            continue
        return Verdict.OPEN if verdict == "accept" else Verdict.BLOCKED
    if policy == "drop":
        return Verdict.RESTRICTED if restricted else Verdict.BLOCKED
    return Verdict.OPEN

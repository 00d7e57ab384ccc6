"""Reading nft's JSON ruleset: does a peer's first packet reach the port?"""

from __future__ import annotations

from agent.doctor.firewall import Verdict, port_verdict


def _rs(policy="accept", *rules):
    items = [{"chain": {"family": "inet", "table": "f", "name": "in", "hook": "input",
                        "policy": policy}}]
    items += [{"rule": {"family": "inet", "table": "f", "chain": "in", "expr": r}}
              for r in rules]
    return {"nftables": items}


def _dport(right, proto="tcp"):
    return {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "dport"}},
                      "right": right}}


ACCEPT, DROP = {"accept": None}, {"drop": None}


def test_no_ruleset_or_no_input_hook_is_open():
    assert port_verdict({"nftables": []}, 47474) is Verdict.OPEN
    assert port_verdict(None, 47474) is Verdict.OPEN


def test_policy_drop_without_a_rule_blocks():
    assert port_verdict(_rs("drop"), 47474) is Verdict.BLOCKED


def test_accept_by_port_set_or_range_opens():
    assert port_verdict(_rs("drop", [_dport(47474), ACCEPT]), 47474) is Verdict.OPEN
    assert port_verdict(_rs("drop", [_dport({"set": [22, 47474]}), ACCEPT]), 47474) \
        is Verdict.OPEN
    assert port_verdict(_rs("drop", [_dport({"range": [47000, 48000]}), ACCEPT]), 47474) \
        is Verdict.OPEN
    assert port_verdict(_rs("drop", [_dport(47474, "udp"), ACCEPT]), 47474, "tcp") \
        is Verdict.BLOCKED


def test_explicit_drop_before_accept_blocks_even_with_policy_accept():
    assert port_verdict(_rs("accept", [_dport(47474), DROP], [_dport(47474), ACCEPT]),
                        47474) is Verdict.BLOCKED


def test_accept_from_one_source_only_is_restricted():
    saddr = {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": "10.0.0.1"}}
    assert port_verdict(_rs("drop", [saddr, _dport(47474), ACCEPT]), 47474) \
        is Verdict.RESTRICTED


def test_established_and_loopback_rules_do_not_count_for_a_new_peer():
    est = {"match": {"op": "in", "left": {"ct": {"key": "state"}},
                     "right": ["established", "related"]}}
    lo = {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}
    assert port_verdict(_rs("drop", [est, ACCEPT], [lo, ACCEPT]), 47474) is Verdict.BLOCKED
    eth = {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth0"}}
    assert port_verdict(_rs("drop", [eth, ACCEPT]), 47474) is Verdict.OPEN


def test_hostile_json_shapes_do_not_crash():
    for junk in ({"nftables": [1, "x", {"chain": "no"}, {"rule": {"expr": "x"}}]},
                 {"nftables": None}, [], "text",
                 _rs("drop", [{"match": {"left": {"payload": {"field": "dport"}},
                                         "right": {"range": ["a", None]}}}, ACCEPT])):
        assert port_verdict(junk, 47474) in set(Verdict)

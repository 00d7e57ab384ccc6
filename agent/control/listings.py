"""The `shoal` listings as tables: peers, resources, the authority map, paired devices, usage.

Why a module: each listing decides what a row is (a resource once, however many peers offer
it) and what its header and note explain (units, what ``-`` means); :func:`table` does the
layout and the escaping. Entries come from the local agent, but names, holders and a remote
catalog's fields are what peers claimed: strings are escaped in the table, and remote
catalog entries that are not well formed are counted and never shown.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from agent.control.render import Column, display, duration, size, table

__all__ = ["authority_text", "dht_find_text", "dht_text", "follow_table", "mirrors_text",
           "model_text", "peers_table",
           "prefetch_text", "resources_table", "trust_table", "usage_text", "versions_table",
           "watching_table"]


def _ago(seconds: object) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def peers_table(peers: Sequence[dict[str, Any]]) -> str:
    if not peers:
        return "no peers seen yet"
    rows = []
    for x in peers:
        rtt = f"{x['rtt_ms']:.2f} ms" if isinstance(x.get("rtt_ms"), (int, float)) else None
        via = ",".join(str(s) for s in x.get("sources", []))
        if x.get("rssi") is not None:
            via += f" ({x['rssi']} dBm)"
        state = ("connected" if x.get("connected") else
                 "reachable" if x.get("reachable") else "unreachable")
        seen = x.get("last_seen", x.get("last_seen_s"))
        rows.append([x["name"], x["short_id"], via, " ".join(x.get("addresses", [])) or None,
                     state, rtt, "yes" if x.get("trusted") else "no", _ago(seen)])
    return table(["NAME", "ID", "SEEN VIA", "ADDRESS", "STATE", Column("RTT", right=True),
                  "PAIRED", "LAST SEEN"], rows,
                 note="RTT: round trip of the last ping; LAST SEEN: last announcement or "
                 "message; '-': not known yet")


def _well_formed(x: object) -> bool:
    """A catalog entry the table can show: remote ones are a peer's unchecked claims."""
    if not isinstance(x, dict):
        return False
    return (all(isinstance(x.get(k), str) for k in ("resource_id", "name"))
            and all(isinstance(x.get(k), int) and not isinstance(x.get(k), bool)
                    and x[k] >= 0 for k in ("version", "size")))


def _standing(x: dict[str, Any]) -> tuple[bool, int]:
    return (x.get("holder_trusted", True) is not False, int(x["version"]))


def resources_table(reply: dict[str, Any]) -> str:
    """Each resource once (by ID and publisher): newest version seen, whether held here,
    and which peers hold which version. Malformed offers are counted, never shown."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    remote = [x for x in reply.get("remote", []) if _well_formed(x)]
    malformed = len(reply.get("remote", [])) - len(remote)

    def group(x: dict[str, Any]) -> dict[str, Any]:
        key = (str(x["resource_id"]), str(x.get("publisher", x.get("publisher_short", ""))))
        return groups.setdefault(key, {"entry": x, "local": None, "holders": []})

    for x in reply.get("local", []):
        g = group(x)
        g["local"], g["entry"] = x, x
    for x in remote:
        g = group(x)
        g["holders"].append(x)
        # a paired holder's (or our own) version shows first: an unpaired one never
        # outranks it, however high (agent/transfer/listing.py)
        if _standing(x) > _standing(g["entry"]):
            g["entry"] = x
    hidden = f"\n({malformed} malformed offer(s) from peers not shown)" if malformed else ""
    if not groups:
        return "no resources" + hidden
    rows = []
    for g in groups.values():
        top, local = g["entry"], g["local"]
        newest = int(top["version"])
        if local is None:
            here = "no"
        elif int(local["version"]) >= newest:
            here = "yes" if local.get("signed", True) else "yes (unsigned)"
        else:
            here = f"v{local['version']} (older)"
        holders = ", ".join(
            str(h.get("holder", "?")) + ("" if h["version"] == newest else f" (v{h['version']})")
            for h in g["holders"]) or None
        files = top.get("files")
        folder = isinstance(files, int) and not isinstance(files, bool)
        rows.append([f"{top['name']}/" if folder else top["name"],
                     top.get("publisher_short", "?"), f"v{newest}",
                     size(int(top["size"])) + (f", {files} file{'' if files == 1 else 's'}"
                                               if folder else ""),
                     "public" if top.get("public") else "private",
                     here, holders, str(top["resource_id"])[:12]])
    return table(["NAME", "PUBLISHER", Column("VERSION", right=True),
                  Column("SIZE", right=True), "ACCESS", "HERE", "HOLDERS", "ID"], rows,
                 note="VERSION: newest seen; HERE: held on this device; HOLDERS: reachable "
                 "peers offering it; NAME/: a folder (SIZE: its bytes and files)" + hidden)


def authority_text(r: dict[str, Any]) -> str:
    head = (f"cluster {str(r['cluster'])[:8]}  term {r['term']}  role {r['role']}  "
            f"leader {r['leader']}\nvoters: {', '.join(map(str, r['voters']))}"
            + (f"\nlearners: {', '.join(map(str, r['learners']))}" if r["learners"] else ""))
    if not r["assignments"]:
        return display(head) + "\nno assignments yet"
    rows = [[x["name"] or str(x["resource_id"])[:12], x["holder"], x["term"], x["epoch"],
             " ".join(f"{h}={s:.2f}" for h, s in x["scores"].items()) or None]
            for x in r["assignments"]]
    return display(head) + "\n\n" + table(
        ["RESOURCE", "AUTHORITY", Column("TERM", right=True), Column("EPOCH", right=True),
         "REPUTATION (holder=score)"], rows,
        note="REPUTATION: each holder's score from 0 to 1, best first; the authority moves "
        "only to a clearly better one (docs/authority.md, section 3)")


def pending_table(pend: Sequence[dict[str, Any]]) -> str:
    """`shoal pair --pending`: what to compare, with whom, and what is still missing."""
    if not pend:
        return "no pairing in progress"

    def state(p: dict[str, Any]) -> str:
        if p.get("local_confirmed"):
            return "confirmed here; waiting for the other device"
        if p.get("remote_confirmed"):
            return "confirmed there; confirm here"
        return "confirm on both devices"

    return table(["CODE", "DEVICE", "DIRECTION", "STATE"], [
        [p["code_display"], p["peer_name"], "incoming" if p["incoming"] else "outgoing",
         state(p)] for p in pend],
        note="confirm with: shoal pair --code CODE (on both devices, if the codes match)")


def trust_table(devices: Sequence[dict[str, Any]]) -> str:
    if not devices:
        return "no paired devices"
    return table(["NAME", "ROLE", "ID", "PAIRED AT"], [
        [d["name"], d["role"], d["display_id"],
         time.strftime("%Y-%m-%d %H:%M", time.localtime(d["paired_at"]))] for d in devices])


def usage_text(r: dict[str, Any]) -> str:
    log, c = r["log"], r["counters"]
    share = (f"on, k = {r['k']}" + (f", epsilon = {r['epsilon']}" if r["epsilon"] else "")
             if r["share"] else "off")
    head = (f"access log: {size(int(log['bytes']))} in {log['segments']} segment(s), "
            f"{log['dropped']} dropped, {log['damaged']} damaged skipped\n"
            f"sharing:    {share}; sent {c['sent']}, received {c['received']} "
            f"from {len(r['peers'])} peer(s), refused {c['refused']}, rejected {c['rejected']}")
    if not r["hottest"]:
        return display(head) + "\nno accesses yet"
    rows = [[h["resource"], f"{h['temperature']:.3f}", f"{h['mesh']:.3f}",
             size(int(h["budget"]))] for h in r["hottest"]]
    return display(head) + "\n\n" + table(
        ["RESOURCE", Column("TEMPERATURE", right=True), Column("MESH", right=True),
         Column("BUDGET", right=True)], rows,
        note="TEMPERATURE: requests here, each halving every [usage] half_life; MESH: plus "
        "what paired devices shared; BUDGET: prefetch bytes it earns")


def _pct(v: object) -> str:
    return "-" if v is None else f"{float(str(v)):.1%}"


def model_text(r: dict[str, Any]) -> str:
    """``shoal model``: the model in use, who trains, the budget, rejections, peers."""
    a, last = r["active"], r["last_training"]
    trainer = r["trainer"]
    who = ("this device" if r["is_trainer"] else trainer[:16]) if trainer else "nobody eligible"
    lines = [f"trainer:    {who}; this device: {'trains' if r['budget_s'] else 'does not train'}"
             f" ({r['power']}, {r['power_note']})",
             f"budget:     {r['spent_s']:.1f} of {r['budget_s']:.0f} CPU-s used in the last 24 h"]
    if last:
        lines.append(f"last run:   {last['cpu_s']:.2f} CPU-s, "
                     + (f"published v{last['version']}" if last.get("ok")
                        else f"failed: {last.get('error', '?')}"))
    if a:
        lines.append(f"model:      {a['kind']} v{a['version']} by {a['publisher'][:16]}, "
                     f"age {duration(float(a['age_s']))}, {size(int(a['bytes']))}, "
                     f"{a['cpu_us_per_prediction']} us CPU per prediction")
        lines.append(f"hit ratio:  {_pct(a['hit_ratio'])} on {a['evaluated']} recent requests"
                     f" (fallback {_pct(a['fallback_hit_ratio'])})")
    else:
        fb = r["fallback"]
        lines.append(f"model:      none yet: predicting with the fallback ({fb['predictor']}, "
                     f"hit ratio {_pct(fb['hit_ratio'])} on {fb['evaluated']} recent requests)")
    for x in r["rejected"]:
        lines.append(f"rejected:   v{x['version']} of {x['resource'][:12]}: {x['reason']}")
    out = display("\n".join(lines))
    if r["peers"]:
        out += "\n\n" + table(
            ["PEER", Column("HEADROOM", right=True), "POWER", Column("BUDGET", right=True),
             "MODEL"],
            [[p["peer"], f"{p['headroom']:.2f}", p["power"], f"{p['budget_s']:.0f} s",
              "-" if p["model_version"] is None else f"v{p['model_version']}"]
             for p in r["peers"]])
    return out


def watching_table(rows: Sequence[dict[str, Any]]) -> str:
    """`shoal publish --watching`: each watched path, its resource and its state."""
    if not rows:
        return "nothing watched (start with: shoal publish PATH --watch)"

    def state(x: dict[str, Any]) -> str:
        if x.get("error"):
            return f"error: {x['error']}"
        return "publishing soon" if x.get("pending") else "up to date"

    return table(["PATH", "NAME", Column("VERSION", right=True), "KIND",
                  Column("DIRS", right=True), "STATE"],
                 [[x["path"], x.get("name"), f"v{x['version']}" if x.get("version") else None,
                   "folder" if x.get("folder") else "file", x.get("dirs"), state(x)]
                  for x in rows],
                 note="DIRS: directories watched (kernel watches); a change becomes a "
                 "version after [watch] quiet seconds, at most one per min_interval")


def prefetch_text(r: dict[str, Any]) -> str:
    """``shoal prefetch``: predictions with scores, the hottest resources, hit statistics."""
    st, b = r["stats"], r["budget"]
    ratio = "-" if st["used_ratio"] is None else f"{st['used_ratio']:.1%}"
    state = "on" if r.get("active", True) else "on, idle (no request of its own lately)"
    head = (f"prefetch:   {state}, mirrors "
            f"{'on' if r['mirrors'] else 'off'}; predictor {r['predictor'] or '-'}; "
            f"{size(int(b['held']))} of {size(int(b['device']))} device budget held\n"
            f"hits:       {st['used']} of {st['prefetched']} prefetched copies used "
            f"({ratio} of those settled), {st['held_unused']} not used yet, "
            f"{size(int(st['wasted_bytes']))} wasted; requests served here {st['local_hits']}, "
            f"by mirrors {st['mirror_hits']}, by peers {st['peer_fetches']}")
    out = display(head)
    preds = r["predictions"]
    out += "\n\n" + (table(
        ["NEXT", Column("SCORE", right=True), Column("SIZE", right=True),
         Column("TEMPERATURE", right=True), "HERE"],
        [[p["resource"], f"{p['score']:.3f}", "-" if p["size"] is None else size(int(p["size"])),
          f"{p['temperature']:.3f}", "yes" if p["held"] else "no"] for p in preds],
        note="NEXT: what this device will likely ask for next, best first; HERE: held "
        "already") if preds else "no predictions yet")
    if r["hottest"]:
        out += "\n\n" + table(
            ["RESOURCE", Column("TEMPERATURE", right=True), Column("MESH", right=True)],
            [[h["resource"], f"{h['temperature']:.3f}", f"{h['mesh']:.3f}"]
             for h in r["hottest"]])
    return out


def mirrors_text(r: dict[str, Any], now: float | None = None) -> str:
    """``shoal mirrors``: the mirrors this device uses and those it hosts for peers."""
    rows = r["mirrors"]
    if not rows:
        return "no mirrors" + ("" if r["enabled"] else " (prefetch/mirrors are off)")
    now = time.time() if now is None else now
    return table(
        ["RESOURCE", "ROLE", "MIRROR DEVICE", "SINCE", "REASON", Column("SERVED", right=True)],
        [[m["resource"], m["role"], m["name"], _ago(now - float(m["since"])), m["reason"],
          str(m["served"])] for m in rows],
        note="ROLE using: this device's fetches try the mirror first; hosting: this device "
        "keeps it for paired peers; SERVED: requests it answered")
def _utc(ts: object) -> str | None:
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not 0 <= ts < 1e11:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def versions_table(reply: dict[str, Any]) -> str:
    """`shoal versions NAME`: one row per version, newest first."""
    rows = []
    for v in reply.get("versions", []):
        plus = v.get("chunks_added")
        minus = v.get("chunks_removed")
        holders = ",".join(str(h) for h in v.get("holders", [])[:4]) or None
        rows.append([f"v{v['version']}", _utc(v.get("created")),
                     size(v["size"]) if isinstance(v.get("size"), int) else None,
                     None if plus is None else f"+{plus}", None if minus is None else f"-{minus}",
                     "yes" if v.get("here") else "no", holders, str(v.get("manifest", ""))[:12]])
    held = reply.get("held_version")
    head = (f"{reply.get('name')} ({str(reply.get('resource_id'))[:12]}, by "
            f"{reply.get('publisher_short')}): " + (f"v{held} held here" if held else
                                                    "not held here"))
    return display(head) + "\n" + table(
        ["VERSION", "CREATED (UTC)", Column("SIZE", right=True), Column("CHUNKS+", right=True),
         Column("CHUNKS-", right=True), "HERE", "KEPT BY", "MANIFEST"], rows,
        note=f"CHUNKS+/-: chunks added/removed against the previous version; HERE: complete "
        f"in this store; KEPT BY: reachable holders that can serve it (they keep the last "
        f"{reply.get('keep_versions', 5)} versions); fetch one: shoal fetch NAME --version N")


def follow_table(rows_in: Sequence[dict[str, Any]]) -> str:
    """`shoal follow`: the followed resources and how current each is."""
    if not rows_in:
        return "not following anything (shoal follow NAME [--to PATH])"
    rows = []
    for x in rows_in:
        last = x.get("last") or {}
        state = ("syncing" if x.get("syncing") else
                 f"failing ({x.get('failures')})" if x.get("failures") else
                 f"v{x['announced']} announced" if x.get("announced") and (
                     x.get("version") or 0) < x["announced"] else "current")
        err = last.get("error") or last.get("export_error")
        rows.append([x.get("name"), str(x.get("resource_id", ""))[:12],
                     f"v{x['version']}" if x.get("version") else None, state,
                     x.get("to"), duration(x["next_check_s"])
                     if isinstance(x.get("next_check_s"), (int, float)) else None,
                     str(err)[:60] if err else None])
    return table(["NAME", "ID", "HELD", "STATE", "EXPORTED TO", Column("NEXT CHECK", right=True),
                  "LAST ERROR"], rows,
                 note="new versions are fetched when a paired publisher or holder announces "
                 "them, on reconnect, and at each periodic check; '-': none")


def dht_text(r: dict[str, Any]) -> str:
    """``shoal dht``: the routing table, the records and the lookups, one line each."""
    rows = [
        ["routing table", f"{r['contacts']} paired contacts ({r['neighbours_in_table']} "
                          f"neighbours, {r['beyond_neighbours']} beyond)"],
        ["records", f"{r['records_held']} held for others and us, {r['keys_announced']} "
                    f"keys announced, {r['records_rejected']} rejected"],
        ["lookups", f"{r['lookups']} for fetches ({r['lookups_found']} found a holder), "
                    f"{r['refreshes']} refreshes"],
        ["requests", f"{r['requests_out']} sent ({r['failures']} unanswered), "
                     f"{r['requests_in']} received ({r['refused']} refused)"],
        ["threshold", f"look holders up first above {r['threshold']} live sessions"],
    ]
    return table(["DHT", "STATE"], rows)


def dht_find_text(r: dict[str, Any]) -> str:
    """``shoal dht --find NAME``: the holders a lookup found, and through whom."""
    head = display(f"{r['resource']}: {len(r['holders'])} holder(s) in {r['rounds']} "
                   f"round(s), {r['ms']} ms")
    if not r["holders"]:
        return head
    return head + "\n" + table(
        ["HOLDER", "EXPIRES (UTC)", "FIRST HOP"],
        [[str(h["id"])[:16], _utc(h["expiry"]), str(h["via"] or "-")[:16]]
         for h in r["holders"]])

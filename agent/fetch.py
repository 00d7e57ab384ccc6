"""Fetch one resource from one peer over an authenticated session.

A pipelined window of chunk requests keeps the link busy (no stop-and-wait); each chunk is
verified by hash in the store before it is kept, so a lying peer cannot poison the store.
Chunks already held are skipped, which makes an interrupted fetch resume where it stopped.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from agent import wire
from agent.control import ControlError
from agent.peer import PeerConnection, RemoteError
from agent.store import Manifest, ManifestError, StoreError

if TYPE_CHECKING:
    from agent.node import Node

WINDOW = 8


async def fetch_manifest(conn: PeerConnection, resource: str) -> Manifest:
    try:
        answer = await conn.request("manifest", {"resource": resource})
    except RemoteError as e:
        raise ControlError(f"{conn.name}: {e}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("manifest"), str):
        raise ControlError(f"{conn.name} sent a malformed manifest answer")
    try:
        return Manifest.from_bytes(answer["manifest"].encode())
    except ManifestError as e:
        raise ControlError(f"{conn.name} sent an invalid manifest: {e}") from None


async def fetch_from_peer(node: Node, conn: PeerConnection, resource: str, reply: Any) -> Manifest:
    manifest = await fetch_manifest(conn, resource)
    store = node.store
    await asyncio.to_thread(store.put_manifest, manifest)
    missing = await asyncio.to_thread(store.missing_chunks, manifest)
    total = manifest.size
    done = total - sum(c.length for c in missing)
    t0 = time.monotonic()
    last_report = 0.0
    queue = list(reversed(missing))

    async def worker() -> None:
        nonlocal done, last_report
        while queue:
            entry = queue.pop()
            try:
                msg = await conn.request(
                    "chunk", {"c": entry.chunk_id.hex(), "cls": "demand"},
                    timeout=node.cfg.transfer.request_timeout,
                )
            except RemoteError as e:
                raise ControlError(f"{conn.name} could not serve a chunk: {e}") from None
            if not isinstance(msg, wire.ChunkReply) or msg.chunk_id != entry.chunk_id:
                raise ControlError(f"{conn.name} answered with the wrong chunk")
            try:
                await asyncio.to_thread(store.put_chunk, entry.chunk_id, msg.data)
            except StoreError as e:
                raise ControlError(f"chunk from {conn.name} rejected: {e}") from None
            done += entry.length
            now = time.monotonic()
            if now - last_report > 0.2:
                last_report = now
                await reply.event(done=done, total=total, elapsed=now - t0)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(min(WINDOW, len(missing))):
                tg.create_task(worker())
    except ExceptionGroup as eg:
        raise eg.exceptions[0] from None
    await asyncio.to_thread(store.commit_resource, manifest)
    await reply.event(done=total, total=total, elapsed=time.monotonic() - t0)
    return manifest

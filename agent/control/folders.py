"""The control commands for folders and watches: ``publish DIR [--watch]``, ``fetch NAME
--to DIR``, ``publish --watching`` and ``unwatch``.

Why a module beside commands.py: the folder work (walking a tree, writing one, watching)
is its own subsystem (agent/store/tree*.py, agent/folders/); commands.py keeps its table
and calls in here, so the command table stays one screen and the folder rules one place.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agent.control.errors import ControlError
from agent.folders.exports import ExportLog, update_tree
from agent.store.scan import scan_tree
from agent.transfer.catalog import resource_entry

if TYPE_CHECKING:
    from agent.config import Config
    from agent.security.identity import Identity
    from agent.store import ContentStore, Manifest

Args = dict[str, object]


class WatchControl(Protocol):
    """What the commands need of the watch service (agent/folders/watch.py)."""

    def add(self, path: Path, resource_id: str, public: bool, version: int,
            name: str) -> dict[str, object]: ...

    def remove(self, query: str) -> list[dict[str, object]]: ...

    def describe(self) -> list[dict[str, object]]: ...


class FolderContext(Protocol):
    """What these commands use of the command context (commands.CommandContext)."""

    @property
    def cfg(self) -> Config: ...

    @property
    def store(self) -> ContentStore: ...

    @property
    def identity(self) -> Identity: ...

    @property
    def catalog_changed(self) -> Callable[[], None]: ...

    @property
    def watch(self) -> WatchControl | None: ...

    @property
    def exports(self) -> ExportLog | None: ...


def _abs_path(args: Args, key: str, what: str) -> Path:
    raw = args.get(key)
    if not isinstance(raw, str) or not raw.startswith("/") or "\0" in raw or len(raw) > 4096:
        raise ControlError(f"{what} needs an absolute path")
    return Path(raw)


async def publish_folder(c: FolderContext, path: Path, name: str | None, public: bool,
                         update: str | None) -> dict[str, object]:
    """Publish the directory *path* as one folder resource; what was skipped is returned
    (symlinks, devices, unreadable or badly named entries) for the CLI to warn about."""
    if not os.access(path, os.R_OK | os.X_OK):
        raise ControlError(f"{path}: the agent (uid {os.getuid()}) cannot read it")
    scan = await asyncio.to_thread(scan_tree, path, (c.cfg.node.data_dir,))
    m = await asyncio.to_thread(c.store.publish_tree, path, name=name, public=public,
                                signer=c.identity, update=update, scan=scan)
    c.catalog_changed()
    return resource_entry(c.store.find(m.resource_id)) | {
        "skipped": scan.skipped, "skipped_count": scan.skipped_count}


def watch_after_publish(c: FolderContext, path: Path, entry: dict[str, object]) -> None:
    """``publish --watch``: keep republishing *path* as the resource just published."""
    if c.watch is None:
        raise ControlError("watching is off on this agent ([watch] enabled = false)",
                           "unavailable")
    version = entry["version"]
    entry["watch"] = c.watch.add(path, str(entry["resource_id"]), bool(entry["public"]),
                                 version if isinstance(version, int) else 0,
                                 str(entry["name"]))


async def watching(c: FolderContext, args: Args) -> object:
    return [] if c.watch is None else c.watch.describe()


async def unwatch(c: FolderContext, args: Args) -> object:
    if c.watch is None:
        raise ControlError("watching is off on this agent ([watch] enabled = false)",
                           "unavailable")
    query = str(args.get("target") or "")
    if not query:
        raise ControlError("unwatch needs a watched path, resource name or ID")
    return c.watch.remove(query)


def refuse_folder_stream(m: Manifest) -> None:
    """A folder cannot be streamed into one file (the CLI's -o): say how to write it."""
    if m.is_folder:
        raise ControlError(f"{m.name!r} is a folder ({len(m.files or ())} files): write it "
                           f"with: shoal fetch {m.name} --to DIR", "invalid")


async def write_folder(c: FolderContext, result: dict[str, object],
                       args: Args) -> dict[str, object]:
    """``fetch --to DIR`` after the fetch: write (or update in place) the folder tree."""
    dest = _abs_path(args, "to", "fetch --to")
    rec = c.store.find(str(result["resource_id"]))
    new = rec.manifest
    if not new.is_folder:
        raise ControlError(f"{new.name!r} is a single file: write it with -o PATH, not --to")
    report = await asyncio.to_thread(update_tree, c.store, c.exports, new, dest,
                                     force=bool(args.get("force")))
    return {"to": str(dest), "tree": report.to_obj()}

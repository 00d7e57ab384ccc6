"""Copies that stay current: `shoal follow`, version announcements, withdrawals.

* :mod:`.policy`  — pure: when to bring each followed resource up to date (announcement,
  catch-up on (re)connect, slow periodic check, bounded retries and concurrency);
* :mod:`.state`   — the followed set and known withdrawals, persisted (strict, bounded);
* :mod:`.service` — the asyncio adapter: events over paired sessions, the sync loop,
  atomic export to the user's path, `unpublish`.

The delta sync itself is ``FetchService.sync_held`` (``sync_to_latest`` here), which the
mirror manager uses too (agent/ports.py ``ResourceSync``).
"""

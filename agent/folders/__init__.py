"""Folders as services: watching published paths and republishing them, and remembering
which folder version was written where (agent/store/tree.py holds the folder format)."""

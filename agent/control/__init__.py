"""Control API (Unix socket, newline-delimited JSON), its command table and the CLI.

Only the client side and the error type are re-exported here: importing the package must
stay cheap for the CLI, which never needs the server.
"""

from agent.control.client import call, call_simple
from agent.control.errors import ControlError

__all__ = ["ControlError", "call", "call_simple"]

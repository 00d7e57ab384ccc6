"""Session layer: Noise_XX_25519_ChaChaPoly_BLAKE2s over length-prefixed records.

``SecureConnection`` is the sans-I/O core (TCP now, BLE GATT later); ``open_channel`` is the
asyncio adapter for stream transports.
"""

from .channel import ConnectionClosedError, SecureChannel, open_channel
from .noise import (
    PROTOCOL_NAME,
    DecryptError,
    FrameTooLarge,
    HandshakeError,
    ProtocolError,
    SessionError,
)
from .records import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PROLOGUE,
    MAX_HANDSHAKE_PAYLOAD,
    MAX_RECORD_SIZE,
    Buffer,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    Message,
    SecureConnection,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PROLOGUE",
    "MAX_HANDSHAKE_PAYLOAD",
    "MAX_RECORD_SIZE",
    "PROTOCOL_NAME",
    "Buffer",
    "ConnectionClosed",
    "ConnectionClosedError",
    "DecryptError",
    "Event",
    "FrameTooLarge",
    "HandshakeComplete",
    "HandshakeError",
    "Message",
    "ProtocolError",
    "SecureChannel",
    "SecureConnection",
    "SessionError",
    "open_channel",
]

"""Who is who: device identity (keys and IDs), the trust store of paired devices, the pairing
ceremony's bookkeeping, and the Noise session every link runs (``session/``)."""

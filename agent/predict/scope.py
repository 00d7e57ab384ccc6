"""Per-device-only learning: one private model per device, for comparison with the mesh model.

Why it exists: the mesh-wide tables learn from every device (each keeps its own context);
this wrapper is the alternative where nothing is learned across devices, so a device that
has just joined starts from nothing. The harness runs both to show what sharing buys, and a
device whose sharing switch is off behaves like this. Bounded: at most *max_devices* models,
least recently active evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Container

from agent.predict.base import Predictor, Ranked


class PerDevice:
    """A separate predictor per device, made by *factory* on the device's first request."""

    def __init__(self, factory: Callable[[], Predictor], max_devices: int = 256) -> None:
        if max_devices < 1:
            raise ValueError("max_devices must be positive")
        self.factory = factory
        self.max_devices = max_devices
        self._models: OrderedDict[str, Predictor] = OrderedDict()
        self._bound = factory().max_state()
        self.name = f"per-device({factory().name})"

    def observe(self, device: str, resource: str, t: float, size: int) -> None:
        model = self._models.get(device)
        if model is None:
            if len(self._models) >= self.max_devices:
                self._models.popitem(last=False)
            model = self._models[device] = self.factory()
        else:
            self._models.move_to_end(device)
        model.observe(device, resource, t, size)

    def predict(self, device: str, k: int, exclude: Container[str] = ()) -> Ranked:
        model = self._models.get(device)
        return model.predict(device, k, exclude) if model is not None else []

    def state_size(self) -> int:
        return sum(m.state_size() for m in self._models.values())

    def max_state(self) -> int:
        return self._bound * self.max_devices

    def memory_bytes(self) -> int:
        return sum(m.memory_bytes() for m in self._models.values())

    def context_bytes(self) -> int:
        return sum(m.context_bytes() for m in self._models.values())

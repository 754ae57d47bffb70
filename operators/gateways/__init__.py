"""Gateway adapters: one small class per operator protocol, found by name in a registry."""

from operators.gateways.base import (
    AreaBroadcastResult,
    BatchResult,
    GatewayAdapter,
    Outcome,
    get_adapter,
    register,
    registered_names,
)

__all__ = [
    "AreaBroadcastResult",
    "BatchResult",
    "GatewayAdapter",
    "Outcome",
    "get_adapter",
    "register",
    "registered_names",
]

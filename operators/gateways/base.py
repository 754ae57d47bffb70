"""The adapter interface and its registry.

An adapter turns one DispatchBatch (or one area broadcast) into the operator's protocol and classifies
the answer. It never touches the database: the send task reads the batch, calls the adapter, and records
the result through a service.
"""

from dataclasses import dataclass, field
from enum import StrEnum
from importlib import import_module


def operator_text(value) -> str:
    """Return words an operator sent as text we can store: no NUL (PostgreSQL text holds none), no lone surrogate."""
    return str(value or "").replace("\x00", "").encode(errors="ignore").decode()


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # the operator took the batch (202); rejected lists refused messages
    RETRY = "retry"  # transient: 408, 429, 5xx, timeout, connection error; retry the same batch id
    FAILED = "failed"  # permanent: another 4xx or a refused address; the batch fails for good


@dataclass(frozen=True)
class OutboundMessage:
    message_id: str
    msisdn: str


@dataclass(frozen=True)
class OutboundBatch:
    """Everything an adapter needs to send one batch, loaded by the send task."""

    batch_id: str
    campaign_id: int
    campaign_title: str
    sender: str
    text: str
    encoding: str
    segments: int
    priority: str
    expires_at: str  # ISO 8601
    callback_url: str
    recipients: list[OutboundMessage]
    base_url: str
    api_key: str
    signing_secret: str


@dataclass(frozen=True)
class BatchResult:
    outcome: Outcome
    accepted: int = 0
    # (message_id, reason) pairs the operator refused inside an accepted batch.
    rejected: list[tuple[str, str]] = field(default_factory=list)
    # Seconds the operator asked us to wait (429 Retry-After), if any.
    retry_after: float | None = None
    error: str = ""
    status_code: int | None = None


@dataclass(frozen=True)
class OutboundAreaBroadcast:
    """Everything an adapter needs to send (or cancel) one operator's area broadcast."""

    broadcast_id: str
    campaign_id: int
    sender: str
    text: str
    encoding: str
    segments: int
    area_codes: list[str]
    geometry: dict | None  # GeoJSON (lng, lat), within the operator's vertex limit
    starts_at: str  # ISO 8601
    ends_at: str  # ISO 8601
    repeat_policy: str
    callback_url: str
    base_url: str
    api_key: str
    signing_secret: str
    # Our estimate of handsets in the area; a hint for the operator (and the simulator's arrival rate).
    estimated_handsets: int | None = None


@dataclass(frozen=True)
class AreaBroadcastResult:
    outcome: Outcome
    error: str = ""
    status_code: int | None = None
    retry_after: float | None = None
    operator_ref: str = ""


class GatewayAdapter:
    """Base class: subclasses set `name` and implement the sends they support."""

    name: str = ""
    # Whether it sends to the operator's base URL: such an operator cannot be saved without one.
    uses_base_url: bool = False

    def send_batch(self, batch: OutboundBatch) -> BatchResult:
        raise NotImplementedError

    def send_area_broadcast(self, broadcast) -> AreaBroadcastResult:
        raise NotImplementedError(f"{self.name} does not support area broadcasts")

    def cancel_area_broadcast(self, broadcast) -> AreaBroadcastResult:
        raise NotImplementedError(f"{self.name} does not support area broadcasts")


_REGISTRY: dict[str, type[GatewayAdapter]] = {}
# Modules that register the adapters shipped with smsblast.
_BUILTIN_MODULES = ("operators.gateways.http_batch_v1", "operators.gateways.log")


def register(cls: type[GatewayAdapter]) -> type[GatewayAdapter]:
    """Class decorator: make the adapter available under its `name`."""
    if not cls.name:
        raise ValueError("An adapter needs a name.")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        try:
            import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def registered_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def sends_area_broadcasts(name: str) -> bool:
    """Return whether the adapter registered as `name` sends area broadcasts (`pull` is no adapter: never pushed to)."""
    _load_builtins()
    adapter = _REGISTRY.get(name)
    return adapter is not None and adapter.send_area_broadcast is not GatewayAdapter.send_area_broadcast


def uses_base_url(name: str) -> bool:
    """Return whether the adapter registered as `name` sends to the operator's base URL."""
    _load_builtins()
    adapter = _REGISTRY.get(name)
    return adapter is not None and adapter.uses_base_url


def get_adapter(name: str) -> GatewayAdapter:
    """Return a new adapter instance for `name`; raise KeyError naming the known adapters."""
    _load_builtins()
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise KeyError(f"Unknown gateway adapter {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None

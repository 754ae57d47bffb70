"""The `log` adapter for development: it logs each batch and accepts every message, sending nothing."""

import logging

from operators.gateways.base import BatchResult, GatewayAdapter, OutboundBatch, Outcome, register

logger = logging.getLogger(__name__)


@register
class LogAdapter(GatewayAdapter):
    """Accept every batch and write one log line per batch (no network, no delivery reports)."""

    name = "log"

    def send_batch(self, batch: OutboundBatch) -> BatchResult:
        logger.info(
            "batch %s campaign %s: %d recipients, %d segments each, sender %s, text %r",
            batch.batch_id,
            batch.campaign_id,
            len(batch.recipients),
            batch.segments,
            batch.sender,
            batch.text[:60],
        )
        return BatchResult(outcome=Outcome.ACCEPTED, accepted=len(batch.recipients), status_code=202)

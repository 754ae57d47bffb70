"""Campaign API actions for the send pipeline."""


class CampaignDispatchActionsMixin:
    """Scheduling and run-control actions (schedule, pause, resume, runs, deliveries, report.csv)."""

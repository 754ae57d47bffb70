"""Remove the deliveries of runs past the retention, keeping each run's figures; print what is done."""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.retention import RunPruned, deliveries_prune, retention_days
from campaigns.selectors import campaign_zone


def counted(n: int, singular: str, plural: str) -> str:
    """Return `n` with its noun, singular for one: "1 day", "2 days"."""
    return f"{n:,} {singular if n == 1 else plural}"


class Command(BaseCommand):
    help = (
        "Remove the deliveries (each recipient's number and state) of finished runs that ended more than "
        "SMSBLAST_DELIVERY_RETENTION_DAYS (or --older-than) days ago, keeping each run's figures."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=int,
            metavar="DAYS",
            help="Runs that ended more than DAYS days ago (default: SMSBLAST_DELIVERY_RETENTION_DAYS).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Print what would be removed; remove nothing.")

    def handle(self, *args, older_than: int | None, dry_run: bool, **options):
        if older_than is not None and older_than < 1:
            raise CommandError("--older-than takes a number of days, at least 1.")
        days = older_than if older_than is not None else retention_days()
        if days <= 0:
            self.stdout.write("SMSBLAST_DELIVERY_RETENTION_DAYS is 0: deliveries are kept for good, nothing removed.")
            return
        verb = "would remove" if dry_run else "removed"

        def report(run: RunPruned) -> None:
            # Each run as it is done: one of a million deliveries takes a while.
            campaign = Campaign.objects.filter(pk=run.campaign_id).first()
            ended = "?"
            if run.finished_at and campaign is not None:
                zone = campaign_zone(campaign)
                ended = f"{timezone.localtime(run.finished_at, zone.tzinfo):%Y-%m-%d %H:%M} {zone.label}"
            left = "" if dry_run or run.done else " (more remain: run the command again)"
            self.stdout.write(
                f"Run {run.run_id} of campaign {run.campaign_id}, ended {ended}: "
                f"{verb} {counted(run.removed, 'delivery', 'deliveries')}{left}"
            )

        done = deliveries_prune(now=timezone.now(), days=days, dry_run=dry_run, progress=report)
        total = sum(run.removed for run in done)
        self.stdout.write(
            f"{counted(len(done), 'run', 'runs')} ended more than {counted(days, 'day', 'days')} ago: "
            f"{verb} {counted(total, 'delivery', 'deliveries')}; their figures are kept."
        )

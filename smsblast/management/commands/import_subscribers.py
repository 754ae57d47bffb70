"""Import subscribers from a CSV file on this machine, in the foreground, with a progress line."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from smsblast import selectors
from smsblast.errors import ServiceConflict, ServiceInvalid
from smsblast.models import SubscriberImport
from smsblast.services import (
    subscriber_import_create_from_path,
    subscriber_import_file_changed,
    subscriber_import_file_changed_message,
    subscriber_import_interrupt,
    subscriber_import_run,
    subscriber_import_stop,
)


class Command(BaseCommand):
    help = (
        "Import subscribers from a CSV (the same job as an upload, run here); --resume ID continues a failed or "
        "stopped one, or one whose worker stopped."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "file", type=Path, nargs="?", help="CSV with a number column (msisdn, nomor, no_hp, ...) and more."
        )
        parser.add_argument(
            "--resume",
            type=int,
            metavar="ID",
            help="Resume a failed or stopped import, or a pending or running one that has made no progress for "
            "SUBSCRIBER_IMPORT_STALE_SECONDS (its task was lost or its worker died).",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="With --resume: take the import over even while it still makes progress (the worker running it "
            "then stops writing).",
        )

    def handle(self, *args, file: Path | None, resume: int | None, force: bool, **options):
        if resume is not None and file is not None:
            raise CommandError("Give either a CSV file or --resume ID, not both.")
        if force and resume is None:
            raise CommandError("--force goes with --resume ID: it takes over an import still making progress.")
        if resume is not None:
            job = SubscriberImport.objects.filter(pk=resume).first()
            if job is None:
                raise CommandError(f"There is no import #{resume}.")
            if job.state != SubscriberImport.State.COMPLETED and not Path(job.file_path).is_file():
                raise CommandError(
                    f"The file of import #{job.pk} is no longer kept ({job.file_path}); import the file again."
                )
            finished = job.state == SubscriberImport.State.COMPLETED
            if not finished and job.lines_done and subscriber_import_file_changed(subscriber_import=job):
                raise CommandError(subscriber_import_file_changed_message(job))
            if not force:
                self._refuse_live(job)
            if job.state == SubscriberImport.State.RUNNING:
                job = subscriber_import_interrupt(subscriber_import=job)
        elif file is None:
            raise CommandError("Give a CSV file, or --resume ID.")
        else:
            try:
                job = subscriber_import_create_from_path(path=file, user=None)
            except ServiceInvalid as exc:
                raise CommandError(str(exc)) from None
        self.stdout.write(f"Import #{job.pk}: {job.file_path}")
        try:
            job = subscriber_import_run(
                subscriber_import=job, progress=lambda message: self.stdout.write(f"  {message}")
            )
        except ServiceConflict as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            # Ctrl-C is the person at the terminal stopping it: the chunks committed so far stay, and the job is
            # stopped (shown as such on its page), not left running, so that it can be resumed at once (here or from
            # its page) instead of after SUBSCRIBER_IMPORT_STALE_SECONDS.
            try:
                job = subscriber_import_stop(subscriber_import=job, actor=None)
            except ServiceConflict:
                job.refresh_from_db()  # it had ended (or been stopped from its page) as the key was pressed
            raise CommandError(
                f"Import #{job.pk} stopped after {job.rows_read:,} rows; rerun with --resume {job.pk}."
            ) from None
        if job.state == SubscriberImport.State.STOPPED:
            raise CommandError(
                f"Import #{job.pk} was stopped by an officer after line {job.lines_done:,}; rerun with --resume "
                f"{job.pk} to go on."
            )
        if job.state != SubscriberImport.State.COMPLETED:
            raise CommandError(f"Import #{job.pk} {job.state}: {job.error} Rerun with --resume {job.pk}.")
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in job.rejected_by_reason.items()) or "none"
        self.stdout.write(
            self.style.SUCCESS(
                f"Import #{job.pk} completed: {job.rows_read:,} rows, {job.created:,} created, "
                f"{job.updated:,} updated, {job.duplicates:,} duplicates, {job.rejected:,} rejected ({reasons}). "
                f"Rejected and repeated rows: {job.rejected_path}"
            )
        )

    def _refuse_live(self, job: SubscriberImport) -> None:
        """Refuse to resume a pending or running import that made progress lately: a worker may be running it.

        The rule of its page and of the API's resume: silent for SUBSCRIBER_IMPORT_STALE_SECONDS, it has stopped.
        """
        live = (SubscriberImport.State.PENDING, SubscriberImport.State.RUNNING)
        if job.state not in live or selectors.subscriber_import_is_stalled(job):
            return
        seconds = max(int((timezone.now() - job.heartbeat_at).total_seconds()), 0)
        ago = f"{seconds // 60} minutes" if seconds >= 120 else "1 second" if seconds == 1 else f"{seconds} seconds"
        stale = settings.SUBSCRIBER_IMPORT_STALE_SECONDS
        raise CommandError(
            f"Import #{job.pk} is still {job.state}: it last made progress {ago} ago, and an import counts as "
            f"stopped only after {stale} seconds without progress. A worker may be running it: wait, or take it "
            f"over anyway with --resume {job.pk} --force (the worker then stops writing)."
        )

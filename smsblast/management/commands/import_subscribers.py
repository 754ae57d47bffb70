"""Import subscribers from a CSV file on this machine, in the foreground, with a progress line."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from smsblast.errors import ServiceConflict, ServiceInvalid
from smsblast.models import SubscriberImport
from smsblast.services import (
    subscriber_import_create_from_path,
    subscriber_import_interrupt,
    subscriber_import_run,
)


class Command(BaseCommand):
    help = "Import subscribers from a CSV (the same job as an upload, run here); --resume ID continues a failed one."

    def add_arguments(self, parser):
        parser.add_argument(
            "file", type=Path, nargs="?", help="CSV with a number column (msisdn, nomor, no_hp, ...) and more."
        )
        parser.add_argument(
            "--resume",
            type=int,
            metavar="ID",
            help="Resume a failed import, or one left running by a worker that died (do not use on a live one).",
        )

    def handle(self, *args, file: Path | None, resume: int | None, **options):
        if resume is not None and file is not None:
            raise CommandError("Give either a CSV file or --resume ID, not both.")
        if resume is not None:
            job = SubscriberImport.objects.filter(pk=resume).first()
            if job is None:
                raise CommandError(f"There is no import #{resume}.")
            if job.state != SubscriberImport.State.COMPLETED and not Path(job.file_path).is_file():
                raise CommandError(
                    f"The file of import #{job.pk} is no longer kept ({job.file_path}); import the file again."
                )
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
            # Ctrl-C: the chunks committed so far stay; the job is failed, not left running, so that it can be
            # resumed at once (here or from its page) instead of after SUBSCRIBER_IMPORT_STALE_SECONDS.
            job = subscriber_import_interrupt(subscriber_import=job)
            raise CommandError(
                f"Import #{job.pk} interrupted after {job.rows_read:,} rows; rerun with --resume {job.pk}."
            ) from None
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

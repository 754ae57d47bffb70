"""Serve every operator in the database from one local operator simulator (development and tests)."""

from django.core.management.base import BaseCommand

from operators.models import Operator
from operators.simulator import OperatorBehaviour, OperatorConfig, SimulatorServer
from smsblast.authentication import api_token_create


def simulator_operators(*, behaviour: OperatorBehaviour) -> dict[str, OperatorConfig]:
    """Return the simulator's view of every operator: its credentials and a fresh report token if it has a user."""
    configs = {}
    for operator in Operator.objects.select_related("user").order_by("slug"):
        report_token = None
        if operator.user is not None:
            # A new token per start: the simulator keeps it in memory only.
            report_token = api_token_create(user=operator.user, name="operator simulator")
        configs[operator.slug] = OperatorConfig(
            api_key=operator.api_key,
            signing_secret=operator.signing_secret,
            report_token=report_token,
            behaviour=behaviour,
        )
    return configs


class Command(BaseCommand):
    help = (
        "Run the operator simulator: the Operator Batch API v1 for every operator under /<slug>/v1/batches, "
        "posting delivery reports back with a fresh API token of the operator's user."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9100)
        parser.add_argument("--latency-ms", type=float, default=0.0, help="Added before every batch answer.")
        parser.add_argument("--error-rate", type=float, default=0.0, help="Share of batches answered 500.")
        parser.add_argument("--throttle-sps", type=int, default=0, help="429 above this many segments/s (0: off).")
        parser.add_argument("--delivered-ratio", type=float, default=0.95, help="Share reported DELIVERED.")
        parser.add_argument("--report-delay-ms", type=float, default=1000.0, help="Delay before reports go back.")
        parser.add_argument("--report-threads", type=int, default=2)
        parser.add_argument("--verbose", action="store_true", help="Log every request.")

    def handle(self, *args, **options):
        behaviour = OperatorBehaviour(
            latency_ms=options["latency_ms"],
            error_rate=options["error_rate"],
            throttle_sps=options["throttle_sps"],
            delivered_ratio=options["delivered_ratio"],
            report_delay_ms=options["report_delay_ms"],
        )
        configs = simulator_operators(behaviour=behaviour)
        for slug, config in configs.items():
            if config.report_token is None:
                self.stderr.write(f"{slug}: no linked user, so no delivery reports will be sent.")
        if not configs:
            self.stderr.write("No operators in the database; run `manage.py seed_demo` first.")
        server = SimulatorServer(
            configs,
            host=options["host"],
            port=options["port"],
            report_threads=options["report_threads"],
            verbose=options["verbose"],
        )
        for slug in configs:
            self.stdout.write(f"  {slug}: {server.url}/{slug}/v1/batches")
        self.stdout.write(f"Operator simulator on {server.url} (GET /stats, POST /<slug>/control).")
        server.serve_forever()

"""Serve every operator in the database, added while serving too, from one local operator simulator (development)."""

import json
import signal

from django.conf import settings as django_settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from operators.models import Operator
from operators.simulator import (
    CONTROL_SETTINGS,
    ControlError,
    OperatorBehaviour,
    OperatorConfig,
    SimulatorServer,
    control_checked,
)
from smsblast.authentication import api_token_create, api_token_revoke, token_hash
from smsblast.models import ApiToken


def simulator_operators(*, behaviour: OperatorBehaviour) -> dict[str, OperatorConfig]:
    """Return the simulator's view of every operator: its credentials and a fresh report token if it has a user."""
    return {
        operator.slug: _simulator_operator(operator, behaviour=behaviour)
        for operator in Operator.objects.select_related("user").order_by("slug")
    }


def _simulator_operator(operator: Operator, *, behaviour: OperatorBehaviour) -> OperatorConfig:
    report_token = None
    if operator.user is not None:
        # A new token per start: the simulator keeps it in memory only.
        report_token = api_token_create(user=operator.user, name="operator simulator")
    return OperatorConfig(
        api_key=operator.api_key,
        signing_secret=operator.signing_secret,
        report_token=report_token,
        behaviour=behaviour,
    )


def simulator_operator_added(slug: str, *, settings: dict) -> OperatorConfig | None:
    """Return the simulator's view of an operator added since it started, with the start's settings; None if unknown.

    Called from a request's thread, which closes its database connection again.
    """
    try:
        operator = Operator.objects.select_related("user").filter(slug=slug).first()
        if operator is None:
            return None
        config = _simulator_operator(operator, behaviour=OperatorBehaviour())
    finally:
        connection.close()
    config.settings = dict(settings)
    return config


def simulator_operator_credentials(slug: str) -> tuple[str, str] | None:
    """Return an operator's current (API key, signing secret), None if it is gone; from a request's thread."""
    try:
        return Operator.objects.filter(slug=slug).values_list("api_key", "signing_secret").first()
    finally:
        connection.close()


def operator_controls(values: list[str], *, slugs) -> dict[str, dict]:
    """Return ``{slug: settings}`` from ``SLUG=JSON`` option values; raise CommandError naming what is wrong."""
    controls: dict[str, dict] = {}
    for value in values:
        slug, _, body = value.partition("=")
        if slug not in slugs:
            raise CommandError(f"--control {value!r}: unknown operator {slug!r} (known: {', '.join(sorted(slugs))}).")
        try:
            settings = json.loads(body)
        except ValueError:
            settings = None
        if not isinstance(settings, dict):
            raise CommandError(f'--control {value!r}: give SLUG={{"setting": value, ...}} as JSON.')
        controls.setdefault(slug, {}).update(settings)
    return controls


def simulator_server(
    *,
    host: str = "127.0.0.1",
    port: int = 9100,
    latency_ms: float = 0.0,
    error_rate: float = 0.0,
    throttle_sps: int = 0,
    delivered_ratio: float = 0.95,
    report_delay_ms: float = 1000.0,
    control: list[str] = (),
    report_threads: int = 2,
    verbose: bool = False,
    **_options,
) -> SimulatorServer:
    """Return a simulator for every operator in the database, its settings checked as /control checks them."""
    if report_threads < 1:
        raise CommandError(f"--report-threads {report_threads}: give at least 1, or no delivery report is ever sent.")
    defaults = {
        "latency_ms": latency_ms,
        "error_rate": error_rate,
        "throttle_sps": throttle_sps,
        "delivered_ratio": delivered_ratio,
        "report_delay_ms": report_delay_ms,
    }
    # Checked by option here, not only through each operator: they also apply to operators added while serving.
    for name, value in defaults.items():
        try:
            control_checked({name: value})
        except ControlError as exc:
            raise CommandError(f"--{name.replace('_', '-')} {value}: {exc}") from None
    configs = simulator_operators(behaviour=OperatorBehaviour())
    try:
        controls = operator_controls(list(control), slugs=configs)
        for slug, config in configs.items():
            config.settings = {**defaults, **controls.get(slug, {})}
        try:
            return SimulatorServer(
                configs,
                host=host,
                port=port,
                report_threads=report_threads,
                verbose=verbose,
                operator_lookup=lambda slug: simulator_operator_added(slug, settings=defaults),
                credentials_lookup=simulator_operator_credentials,
            )
        except ControlError as exc:
            raise CommandError(str(exc)) from None
        except (OSError, OverflowError) as exc:  # OverflowError: a port outside 0-65535
            reason = getattr(exc, "strerror", None) or exc
            raise CommandError(
                f"Cannot listen on {host}:{port} ({reason}); choose another --port (SIMULATOR_PORT for make run)."
            ) from None
    except CommandError:
        simulator_tokens_revoke(config.report_token for config in configs.values())
        raise


def simulator_tokens_revoke(keys) -> None:
    """Revoke the report tokens a simulator issued, once it no longer runs: only its memory held them."""
    hashes = [token_hash(key) for key in keys if key]
    for token in ApiToken.objects.filter(key_hash__in=hashes, revoked_at__isnull=True).select_related("user"):
        api_token_revoke(token=token, actor=None)


class Command(BaseCommand):
    help = (
        "Run the operator simulator: the Operator Batch API v1 for every operator under /<slug>/v1/batches, "
        "posting delivery reports back with a fresh API token of the operator's user. GET /stats gives each "
        "operator's counts; POST /<slug>/control changes its settings while it runs (the --control settings); "
        'outage_seconds makes its batches fail for that long, answered 503 (outage_mode "503") or with the '
        'connection dropped ("refuse").'
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=9100, help="Port to listen on (default 9100; 0: any free one).")
        parser.add_argument("--latency-ms", type=float, default=0.0, help="Added before every batch answer.")
        parser.add_argument("--error-rate", type=float, default=0.0, help="Share of batches answered 500.")
        parser.add_argument("--throttle-sps", type=int, default=0, help="429 above this many segments/s (0: off).")
        parser.add_argument("--delivered-ratio", type=float, default=0.95, help="Share reported DELIVERED.")
        parser.add_argument("--report-delay-ms", type=float, default=1000.0, help="Delay before reports go back.")
        parser.add_argument(
            "--control",
            action="append",
            default=[],
            metavar="SLUG=JSON",
            help="One operator's settings at start, as the body of POST /<slug>/control, e.g. "
            'xl=\'{"latency_ms": 300, "outage_seconds": 60, "outage_mode": "refuse"}\'. Repeatable. Settings: '
            f"{', '.join(CONTROL_SETTINGS)}.",
        )
        parser.add_argument(
            "--report-threads", type=int, default=2, help="Threads posting delivery reports back (default 2)."
        )
        parser.add_argument("--verbose", action="store_true", help="Log every request.")

    def handle(self, *args, **options):
        if not django_settings.DEMO_DATA_ALLOWED:
            # It issues a live API token to every operator's user at each start and stands in for the operators.
            raise CommandError(
                "The operator simulator is for development only; it does not run with production settings."
            )
        # `make run` (honcho) stops its processes with SIGTERM: stopped as on Ctrl-C, the simulator revokes its tokens.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            server = simulator_server(**options)
            try:
                for slug, state in server.operators.items():
                    if state.report_token is None:
                        self.stderr.write(f"{slug}: no linked user, so no delivery reports will be sent.")
                if not server.operators:
                    self.stderr.write("No operators in the database; run `manage.py seed_demo` first.")
                for slug in server.operators:
                    self.stdout.write(f"  {slug}: {server.url}/{slug}/v1/batches")
                self.stdout.write(f"Operator simulator on {server.url} (GET /stats, POST /<slug>/control).")
                server.serve_forever()
            except KeyboardInterrupt:
                pass  # stopped before it served
            finally:
                # Operators added while it served are in `server.operators` too.
                simulator_tokens_revoke(state.report_token for state in list(server.operators.values()))
        finally:
            signal.signal(signal.SIGTERM, previous)

"""Build the world of an end-to-end dispatch test: areas, operators wired to the simulator, subscribers, a campaign."""

from django.db import connection
from django.db.models import Count

from campaigns.dispatch import campaign_schedule_approved
from campaigns.models import Campaign, CampaignRun, Delivery, DispatchBatch
from campaigns.services import campaign_approve, campaign_content_hash, campaign_create, campaign_submit
from operators.models import Operator
from smsblast.authentication import api_token_create
from smsblast.models import Role, Subscriber
from tests.conftest import make_user
from tests.integration.conftest import OPERATOR_SLUGS, PREFIXES
from tests.smsblast.factories import area_tree

DISTRICTS = ["35.05.01", "35.05.02", "35.05.03"]


def operators_create(stack, *, segments_per_second: int, batch_size: int, behaviour: dict | None = None):
    """Create the four test operators, each with an operator user, and start the simulator serving them."""
    simulator_config = {}
    operators = {}
    for slug in OPERATOR_SLUGS:
        user = make_user(f"op-{slug}", Role.OPERATOR)
        operators[slug] = Operator.objects.create(
            name=slug.title(),
            slug=slug,
            prefixes=[PREFIXES[slug]],
            adapter="http_batch_v1",
            api_key=f"key-{slug}",
            signing_secret=f"secret-{slug}",
            segments_per_second=segments_per_second,
            batch_size=batch_size,
            user=user,
        )
        simulator_config[slug] = {
            "api_key": f"key-{slug}",
            "signing_secret": f"secret-{slug}",
            "report_token": api_token_create(user=user, name="simulator"),
            "report_delay_ms": 200,
            **(behaviour or {}),
        }
    url = stack.start_simulator(simulator_config)
    for slug, operator in operators.items():
        operator.base_url = f"{url}/{slug}"
        operator.save(update_fields=["base_url"])
    return operators


def subscribers_create(operators: dict[str, Operator], count: int) -> None:
    """Create `count` subscribers in Kab. Blitar, spread evenly over the operators and districts."""
    area_tree(kecamatan=len(DISTRICTS))
    slugs = list(operators)
    rows = []
    for n in range(count):
        slug = slugs[n % len(slugs)]
        rows.append(
            Subscriber(
                msisdn=f"+{PREFIXES[slug]}{n:07d}",
                area_id=DISTRICTS[n % len(DISTRICTS)],
                operator=operators[slug],
            )
        )
    Subscriber.objects.bulk_create(rows, batch_size=5000)


def campaign_send_now(text: str = "Vaksinasi gratis di puskesmas terdekat. Info: covid19.go.id") -> Campaign:
    """Compose, submit, approve and schedule "now" a campaign to Kab. Blitar; the next beat tick starts it."""
    officer = make_user("officer-it", Role.OFFICER)
    approver = make_user("approver-it", Role.APPROVER)
    campaign = campaign_create(
        author=officer,
        title="Vaksinasi",
        text=text,
        sender="PEMKAB-BLTR",
        area_codes=["35.05"],
        schedule={"kind": "now"},
        priority="urgent",
    )
    campaign_submit(campaign=campaign, actor=officer)
    campaign_approve(campaign=campaign, approver=approver, content_hash=campaign_content_hash(campaign))
    return campaign_schedule_approved(campaign=campaign, user=officer)


def run_of(campaign: Campaign) -> CampaignRun | None:
    return CampaignRun.objects.filter(campaign=campaign).first()


def run_finished(campaign: Campaign) -> bool:
    run = run_of(campaign)
    return run is not None and run.status in CampaignRun.FINAL_STATUSES


def deliveries_by_status(campaign: Campaign, **filters) -> dict[str, int]:
    rows = Delivery.objects.filter(run__campaign=campaign, **filters).values("status").annotate(n=Count("pk"))
    return {row["status"]: row["n"] for row in rows}


def batches_by_status(campaign: Campaign, **filters) -> dict[str, int]:
    rows = DispatchBatch.objects.filter(run__campaign=campaign, **filters).values("status").annotate(n=Count("pk"))
    return {row["status"]: row["n"] for row in rows}


def all_final(campaign: Campaign) -> bool:
    """Return whether the run has fanned out and every one of its deliveries is final."""
    run = run_of(campaign)
    if run is None or not run.fanout_done:
        return False
    return not Delivery.objects.filter(run=run).exclude(status__in=Delivery.FINAL_STATUSES).exists()


def connections_terminate() -> None:
    """Cut every other connection to the test database, as a PostgreSQL restart would (workers must reconnect)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )

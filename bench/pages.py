"""Time the pages and API endpoints as each role on a production-sized PostgreSQL database.

    .venv/bin/python bench/pages.py         # database <DATABASE_URL's>_bench_pages, else smsblast_bench_pages
    .venv/bin/python bench/pages.py --subscribers 100000
    .venv/bin/python bench/pages.py --reuse --only progress --only deliveries --repeat 7


Recreates the database and loads the real area table (with the boundaries of the provinces, the regencies and the
desa of Kab. Blitar), the demo users and operators. Then, in SQL: the subscribers over the desa of Kab. Blitar
(2% opted out); 2,000 campaigns in every state with their approvals, one run each for those that ran; three runs
holding 93%, 83% and 73% of the subscribers as deliveries in mixed statuses, with their batches; a daily campaign
with 300 runs of 300 deliveries; 400,000 older batches over a year; an area broadcast three days into its window
with a reach report every 10 s per operator; audit events for all of these (about 820,000); 60 imports with
1,000 kept rejected rows each. Then requests each page and list or detail endpoint through the Django test client
as officer, approver and admin, twice, and prints the second answer: status, milliseconds, queries, milliseconds
spent in SQL and size. `--only` keeps the paths containing any of its strings, `--repeat N` prints the median of N
answers after the first, and `--reuse` times the database a previous run seeded instead of seeding it again.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import benchdb  # noqa: E402

DEFAULT_URL = benchdb.DEFAULT_URL
WILAYAH = ROOT.parent / "shared" / "data" / "wilayah"
BOUNDARIES = ("batas_provinsi.geojson", "batas_kabupaten.geojson", "batas_desa_3505.geojson")
DAILY_RUNS = 300

SEED_SQL = [
    # Subscribers over the desa of Kab. Blitar, by operator in turn.
    """
    INSERT INTO smsblast_subscriber (msisdn, name, language, opted_out_at, latitude, longitude, created_at, updated_at,
                                     area_id, operator_id)
    SELECT '+62812' || lpad(g::text, 8, '0'), 'Warga ' || g, CASE WHEN g %% 30 = 0 THEN 'en' ELSE 'id' END,
           CASE WHEN g %% 50 = 0 THEN now() - interval '3 days' END,
           CASE WHEN g %% 10 = 0 THEN -8.3 + (g %% 997) / 2000.0 END,
           CASE WHEN g %% 10 = 0 THEN 112.0 + (g %% 991) / 1500.0 END,
           now() - (g || ' seconds')::interval, now(), a.codes[1 + g %% a.n], o.ids[1 + g %% 4]
    FROM generate_series(1, %(subscribers)s) g,
         (SELECT array_agg(code ORDER BY code) codes, count(*) n FROM smsblast_area
          WHERE code LIKE '35.05.%%' AND level = 'desa') a,
         (SELECT array_agg(id ORDER BY id) ids FROM operators_operator) o
    """,
    # Campaigns in every state, one kecamatan each, by the demo officers; every twentieth an area broadcast.
    """
    INSERT INTO campaigns_campaign (title, text, sender, mode, area_codes, polygon, area_scope, audience, priority,
        schedule, next_run_at, validity_minutes, starts_at, ends_at, repeat_policy, operator_slugs, exercise,
        cap_category, cap_event, cap_urgency, cap_severity, cap_certainty, instruction, cap_source_identifier,
        cap_source_sender, cap_source_references, status, author_id, created_at, updated_at)
    SELECT 'Kampanye ' || g, 'Info vaksinasi di puskesmas terdekat nomor ' || g, 'DINKES',
        CASE WHEN g %% 20 = 0 THEN 'area_broadcast' ELSE 'targeted' END,
        jsonb_build_array('35.05.' || lpad((1 + g %% 22)::text, 2, '0')), NULL,
        '35.05.' || lpad((1 + g %% 22)::text, 2, '0'), '{}'::jsonb, 'normal', '{"kind": "now"}'::jsonb, NULL, 1440,
        now() - interval '3 days', now() + interval '4 days',
        'once_per_window', '[]'::jsonb, false, 'Health', '', '', '', '', '', '', '', '[]'::jsonb,
        (ARRAY['draft', 'pending_approval', 'approved', 'scheduled', 'sending', 'paused', 'completed',
               'completed_with_failures', 'rejected', 'cancelled'])[1 + g %% 10],
        (SELECT id FROM smsblast_user WHERE username = (ARRAY['officer', 'officer2'])[1 + g %% 2]),
        now() - (g || ' hours')::interval, now() - (g || ' hours')::interval
    FROM generate_series(1, 2000) g
    """,
    """
    INSERT INTO campaigns_approval (campaign_id, approver_id, decision, content_hash, reason, snapshot, created_at,
                                    voided_at)
    SELECT c.id, (SELECT id FROM smsblast_user WHERE username = 'approver'),
        CASE WHEN c.status = 'rejected' THEN 'rejected' ELSE 'approved' END, md5(c.id::text) || md5(c.id::text),
        CASE WHEN c.status = 'rejected' THEN 'Perbaiki teks' ELSE '' END,
        jsonb_build_object('text', c.text, 'title', c.title), c.created_at + interval '1 hour', NULL
    FROM campaigns_campaign c WHERE c.status NOT IN ('draft', 'pending_approval')
    """,
    """
    INSERT INTO campaigns_campaignrun (campaign_id, scheduled_for, status, content_hash, text, sender, segments,
        encoding, frozen, fanout_cursor, fanout_done, started_at, finished_at, expires_at, last_progress_at,
        fanout_progress_at, created_at)
    SELECT c.id, c.created_at + interval '2 hours',
        CASE WHEN c.status IN ('sending', 'paused', 'cancelled', 'completed_with_failures') THEN c.status
             ELSE 'completed' END,
        md5(c.id::text) || md5(c.id::text), c.text, c.sender, 1, 'GSM7',
        jsonb_build_object('starts_at', c.starts_at::text, 'ends_at', c.ends_at::text), 0, true,
        c.created_at + interval '2 hours', NULL, c.created_at + interval '26 hours', now(), now(),
        c.created_at + interval '2 hours'
    FROM campaigns_campaign c
    WHERE c.status IN ('sending', 'paused', 'completed', 'completed_with_failures', 'cancelled')
    """,
]
BIG_RUN_SQL = [
    """
    CREATE TEMP TABLE recipients AS SELECT s.id, s.msisdn, s.operator_id, s.opted_out_at,
        (row_number() OVER (PARTITION BY s.operator_id ORDER BY s.id) - 1) / 1000 AS batch_number
    FROM smsblast_subscriber s WHERE s.id <= %(size)s
    """,
    "CREATE TEMP TABLE batches AS SELECT operator_id, batch_number, gen_random_uuid() id, count(*) size "
    "FROM recipients GROUP BY operator_id, batch_number",
    """
    INSERT INTO campaigns_dispatchbatch (id, run_id, operator_id, status, size, segments, attempts, throttled,
        lease_expires_at, next_attempt_at, accepted_count, last_error, created_at, updated_at, accepted_at)
    SELECT id, %(run)s, operator_id,
        CASE WHEN batch_number %% 17 = 0 THEN 'failed' WHEN batch_number %% 13 = 0 THEN 'pending'
             WHEN batch_number %% 11 = 0 THEN 'retry_wait' ELSE 'accepted' END,
        size, size, 1, 0, NULL, NULL, size, '', now(), now(), now()
    FROM batches
    """,
    """
    INSERT INTO campaigns_delivery (id, run_id, batch_id, operator_id, msisdn, status, reason, operator_ref, error_code,
                                    done_at, updated_at)
    SELECT nextval(pg_get_serial_sequence('campaigns_delivery', 'id')), %(run)s, b.id, r.operator_id, r.msisdn,
        CASE WHEN r.opted_out_at IS NOT NULL THEN 'skipped' WHEN r.batch_number %% 17 = 0 THEN 'failed'
             WHEN r.batch_number %% 13 = 0 OR r.batch_number %% 11 = 0 THEN 'queued'
             ELSE (ARRAY['delivered', 'delivered', 'delivered', 'delivered', 'delivered', 'submitted', 'undelivered',
                         'expired', 'rejected', 'queued'])[1 + r.id %% 10] END,
        CASE WHEN r.opted_out_at IS NOT NULL THEN 'opted_out' ELSE '' END, 'ref' || r.id, '', now(), now()
    FROM recipients r JOIN batches b USING (operator_id, batch_number)
    """,
    "DROP TABLE recipients, batches",
]
HISTORY_SQL = [
    # A daily campaign: 300 runs of 300 deliveries.
    """
    INSERT INTO campaigns_campaignrun (campaign_id, scheduled_for, status, content_hash, text, sender, segments,
        encoding, frozen, fanout_cursor, fanout_done, started_at, finished_at, expires_at, last_progress_at,
        fanout_progress_at, created_at)
    SELECT %(daily)s, now() - (g || ' days')::interval, 'completed', 'h', 'daily text', 'DINKES', 1, 'GSM7',
        '{}'::jsonb, 0, true, now() - (g || ' days')::interval, now() - (g || ' days')::interval + interval '1 hour',
        NULL, now(), now(), now() - (g || ' days')::interval
    FROM generate_series(1, %(daily_runs)s) g
    """,
    """
    INSERT INTO campaigns_delivery (id, run_id, batch_id, operator_id, msisdn, status, reason, operator_ref, error_code,
                                    done_at, updated_at)
    SELECT nextval(pg_get_serial_sequence('campaigns_delivery', 'id')), r.id, NULL, s.operator_id, s.msisdn,
        'delivered', '', '', '', r.scheduled_for + interval '10 minutes', now()
    FROM campaigns_campaignrun r, smsblast_subscriber s WHERE r.campaign_id = %(daily)s AND s.id <= 300
    """,
    # A year of older batches, one in fifty failed.
    """
    INSERT INTO campaigns_dispatchbatch (id, run_id, operator_id, status, size, segments, attempts, throttled,
        lease_expires_at, next_attempt_at, accepted_count, last_error, created_at, updated_at, accepted_at)
    SELECT gen_random_uuid(), r.ids[1 + g %% r.n], o.ids[1 + g %% 4],
        CASE WHEN g %% 50 = 0 THEN 'failed' ELSE 'accepted' END, 1000, 1000, 1, 0, NULL, NULL, 1000,
        CASE WHEN g %% 50 = 0 THEN 'HTTP 503 from operator' ELSE '' END,
        now() - interval '1 year' + (g * 70 || ' seconds')::interval,
        now() - interval '1 year' + (g * 70 || ' seconds')::interval,
        now() - interval '1 year' + (g * 70 || ' seconds')::interval
    FROM generate_series(1, 400000) g,
        (SELECT array_agg(id) ids, count(*) n FROM campaigns_campaignrun WHERE campaign_id <> %(daily)s) r,
        (SELECT array_agg(id ORDER BY id) ids FROM operators_operator) o
    """,
    # An area broadcast three days into its window, every operator reporting its reach every 10 s.
    "UPDATE campaigns_campaign SET status = 'sending' WHERE id = %(broadcast)s",
    """
    INSERT INTO campaigns_campaignrun (campaign_id, scheduled_for, status, content_hash, text, sender, segments,
        encoding, frozen, fanout_cursor, fanout_done, started_at, finished_at, expires_at, last_progress_at,
        fanout_progress_at, created_at)
    SELECT c.id, c.starts_at, 'sending', 'h', c.text, c.sender, 1, 'GSM7',
        jsonb_build_object('starts_at', c.starts_at::text, 'ends_at', c.ends_at::text), 0, true, c.starts_at, NULL,
        NULL, now(), now(), c.starts_at
    FROM campaigns_campaign c WHERE c.id = %(broadcast)s
    """,
    """
    INSERT INTO operators_areabroadcast (id, run_id, operator_id, state, area, attempts, cancel_attempts,
        next_attempt_at, cancel_requested_at, operator_ref, handsets_reached, reached_at, last_error, acknowledged_at,
        finished_at, created_at, updated_at)
    SELECT gen_random_uuid(), r.id, o.id, 'acknowledged', '{}'::jsonb, 1, 0, NULL, NULL, 'ref', 0, NULL, '',
        now() - interval '3 days', NULL, now(), now()
    FROM operators_operator o, campaigns_campaignrun r WHERE r.campaign_id = %(broadcast)s
    """,
    """
    INSERT INTO operators_areabroadcastreach (broadcast_id, handsets_reached, at, received_at)
    SELECT b.id, g * 7, now() - interval '3 days' + (g * 10 || ' seconds')::interval, now()
    FROM operators_areabroadcast b, generate_series(1, 25920) g
    """,
    # The audit trail: five events per campaign, three per run (two more per run of the daily campaign), two per
    # batch and one per opted-out number.
    """
    INSERT INTO smsblast_auditevent (actor_id, action, object_type, object_id, from_state, to_state, at, details)
    SELECT c.author_id, a.action, 'campaigns.campaign', c.id::text, a.f, a.t,
        c.created_at + (a.k || ' minutes')::interval, '{}'::jsonb
    FROM campaigns_campaign c, (VALUES (1, 'campaign.create', '', 'draft'),
        (2, 'campaign.submit', 'draft', 'pending_approval'), (3, 'campaign.approve', 'pending_approval', 'approved'),
        (4, 'campaign.schedule', 'approved', 'scheduled'), (5, 'campaign.start', 'scheduled', 'sending'))
        AS a(k, action, f, t)
    """,
    """
    INSERT INTO smsblast_auditevent (actor_id, action, object_type, object_id, from_state, to_state, at, details)
    SELECT NULL, a.action, 'campaigns.campaignrun', r.id::text, a.f, a.t,
        r.scheduled_for + (a.k || ' minutes')::interval, '{}'::jsonb
    FROM campaigns_campaignrun r, (VALUES (1, 'run.start', '', 'fanning_out'),
        (2, 'run.fanned_out', 'fanning_out', 'sending'), (3, 'run.complete', 'sending', 'completed')) a(k, action, f, t)
    """,
    """
    INSERT INTO smsblast_auditevent (actor_id, action, object_type, object_id, from_state, to_state, at, details)
    SELECT NULL, a.action, 'campaigns.campaign', %(daily)s::text, a.f, a.t,
        r.scheduled_for + (a.k || ' minutes')::interval, '{}'::jsonb
    FROM campaigns_campaignrun r, (VALUES (1, 'campaign.run_start', 'scheduled', 'sending'),
        (2, 'campaign.run_complete', 'sending', 'scheduled')) a(k, action, f, t)
    WHERE r.campaign_id = %(daily)s
    """,
    """
    INSERT INTO smsblast_auditevent (actor_id, action, object_type, object_id, from_state, to_state, at, details)
    SELECT NULL, a.action, 'campaigns.dispatchbatch', b.id::text, a.f, a.t,
        b.updated_at + (a.k || ' seconds')::interval, '{}'::jsonb
    FROM campaigns_dispatchbatch b, (VALUES (1, 'batch.lease', 'pending', 'in_flight'),
        (2, 'batch.accept', 'in_flight', 'accepted')) a(k, action, f, t)
    """,
    """
    INSERT INTO smsblast_auditevent (actor_id, action, object_type, object_id, from_state, to_state, at, details)
    SELECT NULL, 'subscriber.opt_out', 'smsblast.subscriber', s.id::text, '', 'opted_out', s.opted_out_at,
        '{"via": "sms"}'::jsonb
    FROM smsblast_subscriber s WHERE s.opted_out_at IS NOT NULL
    """,
    """
    INSERT INTO smsblast_subscriberimport (state, file_path, original_name, rejected_path, uploaded_by_id, file_size,
        bytes_read, lines_done, total_rows, rows_read, created, updated, duplicates, rejected, rejected_by_reason,
        error, created_at, started_at, finished_at, heartbeat_at, area_scope)
    SELECT (ARRAY['completed', 'completed', 'failed', 'running', 'pending'])[1 + g %% 5], 'import' || g || '.csv',
        'pelanggan' || g || '.csv', '', (SELECT id FROM smsblast_user WHERE username = 'officer'), 10000000, 10000000,
        100000, 100000, 100000, 90000, 5000, 1000, 4000, '{"invalid": 3000, "unknown_area": 1000}'::jsonb, '',
        now() - (g || ' days')::interval, now() - (g || ' days')::interval, now(), now(), '35.05'
    FROM generate_series(1, 60) g
    """,
    """
    INSERT INTO smsblast_subscriberimportrejection (subscriber_import_id, line, raw, reason)
    SELECT i.id, g + 1, '0812xx' || g || ',35.05.01', 'invalid'
    FROM smsblast_subscriberimport i, generate_series(1, 1000) g
    """,
]


def bench_database_url(url: str) -> str:
    """Return url naming this benchmark's own database beside the one in url, which is never touched."""
    return benchdb.bench_database_url(url, "_bench_pages")


def bench_database_from_env() -> str:
    """Return this benchmark's database URL from DATABASE_URL (else the local default); exit unless PostgreSQL."""
    return benchdb.bench_database_from_env("_bench_pages", what="The pages benchmark")


def seed(subscribers: int) -> dict[str, int]:
    """Fill the fresh database; return the ids the requests need."""
    import psycopg
    from django.core.management import call_command
    from django.db import connection

    from smsblast.services import areas_load

    call_command("migrate", verbosity=0)
    areas_load(path=WILAYAH / "kode_wilayah.csv", boundary_paths=[WILAYAH / name for name in BOUNDARIES])
    call_command("seed_demo", subscribers=0, verbosity=0)
    with connection.cursor() as cursor:
        for sql in SEED_SQL:
            cursor.execute(sql, {"subscribers": subscribers})
        cursor.execute(
            "SELECT c.id, min(r.id) FROM campaigns_campaign c JOIN campaigns_campaignrun r ON r.campaign_id = c.id "
            "WHERE c.status = 'sending' AND c.mode = 'targeted' GROUP BY c.id ORDER BY c.id LIMIT 4"
        )
        (big, big_run), *others, (daily, _) = cursor.fetchall()
        for (_, run), share in zip([(big, big_run), *others], (0.93, 0.83, 0.73), strict=True):
            for sql in BIG_RUN_SQL:
                cursor.execute(sql, {"size": int(subscribers * share), "run": run})
        cursor.execute("SELECT min(id) FROM campaigns_campaign WHERE mode = 'area_broadcast'")
        (broadcast,) = cursor.fetchone()
        for sql in HISTORY_SQL:
            cursor.execute(sql, {"daily": daily, "daily_runs": DAILY_RUNS, "broadcast": broadcast})
    connection.close()
    with psycopg.connect(
        os.environ["DATABASE_URL"].replace("postgres://", "postgresql://", 1), autocommit=True
    ) as conn:
        conn.execute("VACUUM ANALYZE")
    return seeded_ids()


def seeded_ids() -> dict[str, int]:
    """Return the ids the requests need, from a seeded database."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.id, min(r.id) FROM campaigns_campaign c JOIN campaigns_campaignrun r ON r.campaign_id = c.id "
            "WHERE c.status = 'sending' AND c.mode = 'targeted' GROUP BY c.id ORDER BY c.id LIMIT 4"
        )
        (big, big_run), *_, (daily, _) = cursor.fetchall()
        cursor.execute("SELECT min(id) FROM campaigns_campaign WHERE mode = 'area_broadcast'")
        (broadcast,) = cursor.fetchone()
        cursor.execute("SELECT min(id) FROM campaigns_campaign WHERE status = 'pending_approval'")
        (pending,) = cursor.fetchone()
        cursor.execute("SELECT min(id) FROM smsblast_subscriberimport")
        (job,) = cursor.fetchone()
    return {"big": big, "big_run": big_run, "daily": daily, "broadcast": broadcast, "pending": pending, "job": job}


def requests_to_time(ids: dict[str, int]) -> list[tuple[tuple[str, ...], str]]:
    """Return (roles, path) of each page and endpoint to time."""
    staff, officers, admin = ("officer", "approver", "admin"), ("officer", "admin"), ("admin",)
    big, daily, broadcast = ids["big"], ids["daily"], ids["broadcast"]
    return [
        (staff, "/"),
        (staff, "/campaigns/"),
        (staff, "/campaigns/?page=15"),
        (staff, f"/campaigns/{big}/"),
        (staff, f"/campaigns/{daily}/"),
        (staff, f"/campaigns/{big}/runs/{ids['big_run']}/progress/"),
        (("approver",), f"/campaigns/{ids['pending']}/review/"),
        (officers, "/campaigns/areas/?parent=35"),
        (officers, "/campaigns/areas/?area_q=kab"),
        (officers, "/subscribers/"),
        (officers, f"/subscribers/imports/{ids['job']}/"),
        (admin, "/operators/"),
        (staff, "/api/v1/campaigns/"),
        (staff, f"/api/v1/campaigns/{big}/"),
        (staff, f"/api/v1/campaigns/{daily}/runs/"),
        (staff, f"/api/v1/campaigns/{big}/deliveries/"),
        (staff, f"/api/v1/campaigns/{big}/deliveries/?status=submitted"),
        (staff, f"/api/v1/campaigns/{big}/report.csv"),
        (staff, f"/api/v1/campaigns/{broadcast}/"),
        (staff, f"/api/v1/campaigns/{broadcast}/broadcast/"),
        (officers, "/api/v1/subscribers/"),
        (officers, "/api/v1/subscribers/imports/"),
        (staff, "/api/v1/areas/?parent=35"),
        (admin, "/admin/smsblast/auditevent/"),
        (admin, "/admin/smsblast/subscriber/"),
        (admin, "/admin/campaigns/delivery/"),
        (admin, "/admin/campaigns/dispatchbatch/"),
        (admin, "/admin/campaigns/campaign/"),
        (admin, f"/admin/campaigns/campaign/{daily}/change/"),
        (admin, f"/admin/smsblast/subscriberimport/{ids['job']}/change/"),
    ]


def timed(client, path: str) -> tuple[int, float, int, float, int]:
    """Return the status, milliseconds, queries, milliseconds in SQL and bytes of one request."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        began = time.perf_counter()
        response = client.get(path)
        size = sum(len(chunk) for chunk in response.streaming_content) if response.streaming else len(response.content)
        elapsed = (time.perf_counter() - began) * 1000
    sql = sum(float(query["time"]) for query in captured.captured_queries) * 1000
    return response.status_code, elapsed, len(captured), sql, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=300_000)
    parser.add_argument("--only", action="append", default=[], help="time only the paths containing this")
    parser.add_argument("--repeat", type=int, default=1, help="print the median of this many answers")
    parser.add_argument("--reuse", action="store_true", help="time the database a previous run seeded")
    args = parser.parse_args()

    url = bench_database_from_env()
    if args.reuse:
        os.environ["DATABASE_URL"] = url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
        os.environ.setdefault("LOG_LEVEL", "WARNING")
        import django

        django.setup()
    else:
        benchdb.django_in_fresh_database(url)
    from django.conf import settings
    from django.test import Client

    from smsblast.models import User

    if args.reuse:
        ids = seeded_ids()
    else:
        started = time.perf_counter()
        ids = seed(args.subscribers)
        print(f"seeded {args.subscribers:,} subscribers in {time.perf_counter() - started:.0f} s")
    settings.ALLOWED_HOSTS = ["testserver"]
    print(f"{'status':>6} {'ms':>7} {'queries':>7} {'sql ms':>7} {'KiB':>8}  role      path")
    for roles, path in requests_to_time(ids):
        if args.only and not any(part in path for part in args.only):
            continue
        for role in roles:
            client = Client()
            client.force_login(User.objects.get(username=role))
            timed(client, path)  # the first request warms the caches
            answers = sorted(timed(client, path) for _ in range(args.repeat))
            status, elapsed, queries, sql, size = statistics.median_low(answers)
            print(f"{status:>6} {elapsed:>7.0f} {queries:>7} {sql:>7.0f} {size / 1024:>8.0f}  {role:9} {path}")


if __name__ == "__main__":
    main()

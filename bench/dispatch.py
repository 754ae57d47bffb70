"""Benchmark the dispatch pipeline end to end on PostgreSQL, against the raw HTTP limit of the same machine.

    make bench-dispatch                                  # 200,000 recipients
    make bench-dispatch BENCH_ARGS="--recipients 1000000"

DATABASE_URL names a PostgreSQL server and database; the benchmark uses a fresh database named after it
with a `_bench_dispatch` suffix (dropped and created). It loads Kab. Blitar, four operators (batch size
1,000, no rate limit) pointed at the operator simulator (no latency, delivery reports off: the figure
stops at the last batch accepted) and the subscribers, then starts two Celery worker processes (solo pool,
every queue) and plays celery beat itself. Two runs, each with freshly started workers:

  small  10,000 recipients (one district)
  full   --recipients recipients (the whole regency)

For each it prints recipients per second from the run's start to its last accepted batch and the peak RSS
of each worker. Then it posts the very same batches of the full run (body encoding, HMAC signing and the
pooled HTTP POST of the http_batch_v1 adapter) from one tight loop per core to the same simulator under
other operator slugs, three times over by default so the figure is not a half-second sample: the raw
limit. The ratio pipeline / raw is the share of the machine's HTTP capacity the pipeline reaches with its
database work, queueing and leasing on top. `--profile` runs the full-size workers under cProfile.
"""

import argparse
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))
import benchdb  # noqa: E402
from benchdb import recreate_database  # noqa: E402

from smsblast.devtools import free_port, start_celery_worker, start_simulator  # noqa: E402

SLUGS = ("telkomsel", "indosat", "xl", "smartfren")
PREFIXES = {"telkomsel": "62812", "indosat": "62856", "xl": "62817", "smartfren": "62881"}
SMALL = 10_000
SMALL_DISTRICT = "35.05.01"
DISTRICTS = [f"35.05.{n:02d}" for n in range(1, 23)]


def bench_database_url(url: str) -> str:
    """Return url naming this benchmark's own database beside the one in url, which is never touched."""
    return benchdb.bench_database_url(url, "_bench_dispatch")


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    from tests.conftest import redis_server_binary

    port = free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return proc, f"redis://127.0.0.1:{port}/0"


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"Nothing listens on port {port}.")
            time.sleep(0.05)


def seed(recipients: int, simulator_url: str) -> None:
    """Load areas, operators and `recipients` subscribers (the first 10,000 in one district), by COPY."""
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from operators.models import Operator
    from smsblast.models import Area, AreaLevel

    call_command("migrate", verbosity=0)
    Area.objects.create(code="35", name="Jawa Timur", level=AreaLevel.PROVINSI)
    Area.objects.create(code="35.05", name="Kabupaten Blitar", level=AreaLevel.KABUPATEN, parent_id="35")
    for code in DISTRICTS:
        Area.objects.create(code=code, name=f"Kecamatan {code}", level=AreaLevel.KECAMATAN, parent_id="35.05")
    operators = []
    for slug in SLUGS:
        operators.append(
            Operator.objects.create(
                name=slug.title(),
                slug=slug,
                prefixes=[PREFIXES[slug]],
                adapter="http_batch_v1",
                base_url=f"{simulator_url}/{slug}",
                api_key=f"key-{slug}",
                signing_secret=f"secret-{slug}",
                segments_per_second=0,  # no rate limit
                batch_size=1000,
            )
        )
    now = timezone.now()
    with connection.cursor() as cursor:
        copy_sql = (
            "COPY smsblast_subscriber (msisdn, area_id, operator_id, name, language, created_at, updated_at) FROM STDIN"
        )
        with cursor.cursor.copy(copy_sql) as copy:
            for n in range(recipients):
                operator = operators[n % len(operators)]
                district = SMALL_DISTRICT if n < SMALL else DISTRICTS[1 + n % (len(DISTRICTS) - 1)]
                copy.write_row((f"+{operator.prefixes[0]}{n:08d}", district, operator.pk, "", "id", now, now))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def campaign_scheduled(area_code: str, title: str):
    """Create, approve and schedule "now" a campaign to `area_code` through the services."""
    from campaigns.dispatch import campaign_schedule_approved
    from campaigns.services import campaign_approve, campaign_content_hash, campaign_create, campaign_submit
    from smsblast.models import Role, User
    from smsblast.roles import user_role_set

    officer, _ = User.objects.get_or_create(username="bench-officer")
    user_role_set(user=officer, role=Role.OFFICER)
    approver, _ = User.objects.get_or_create(username="bench-approver")
    user_role_set(user=approver, role=Role.APPROVER)
    campaign = campaign_create(
        author=officer,
        title=title,
        text="Vaksinasi gratis di puskesmas terdekat. Bawa KTP. Info: covid19.go.id",
        sender="PEMKAB-BLTR",
        area_codes=[area_code],
        schedule={"kind": "now"},
        priority="urgent",
    )
    campaign_submit(campaign=campaign, actor=officer)
    campaign_approve(campaign=campaign, approver=approver, content_hash=campaign_content_hash(campaign))
    return campaign_schedule_approved(campaign=campaign, user=officer)


class RssSampler(threading.Thread):
    """Record the peak resident set size of each worker process (with any children) every 50 ms."""

    def __init__(self, pids: dict[str, int]):
        super().__init__(daemon=True)
        import psutil

        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peaks = dict.fromkeys(pids, 0)
        self.stopped = threading.Event()

    def sample(self) -> None:
        import psutil

        for name, process in self.processes.items():
            try:
                rss = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
            except psutil.Error:
                continue
            self.peaks[name] = max(self.peaks[name], rss)

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            self.sample()


def cpu_seconds(pids: dict[str, int]) -> dict:
    """CPU seconds (user + system) so far of each named process with its children, and of PostgreSQL.

    "postgresql" holds every local postgres process by pid (reaped backends are in the postmaster's children
    times); it is empty when the server runs elsewhere. Subtract two samples with cpu_spent().
    """
    import psutil

    def spent(process) -> float:
        times = process.cpu_times()
        return times.user + times.system + times.children_user + times.children_system

    totals = {}
    for name, pid in pids.items():
        try:
            process = psutil.Process(pid)
            totals[name] = spent(process) + sum(spent(child) for child in process.children(recursive=True))
        except psutil.Error:
            totals[name] = 0.0
    totals["postgresql"] = {}
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in ("postgres", "postmaster"):
            try:
                totals["postgresql"][process.pid] = spent(process)
            except psutil.Error:
                continue
    return totals


def cpu_spent(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds spent between two cpu_seconds() samples.

    PostgreSQL is counted process by process: a backend that exits in between drops out of the second sample
    (its time reaches the postmaster's children once reaped), so a plain difference of totals could go negative.
    """
    spent = {name: after[name] - before[name] for name in after if name != "postgresql"}
    spent["postgresql"] = sum(
        seconds - before["postgresql"].get(pid, 0.0) for pid, seconds in after["postgresql"].items()
    )
    return spent


def close_database_connections() -> None:
    """Close this process's connection and wait until every backend of the benchmark database has exited.

    The postmaster adds an exited backend's CPU time to its children's times when it reaps it: a backend reaped
    during the raw loop (the workers', or this process's after reading the batches back) would have its whole
    time counted as the raw loop's.
    """
    import psutil
    from django.db import connection, connections

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        backends = [pid for (pid,) in cursor.fetchall()]
    connections.close_all()  # the raw loops are forked: they must not share this process's connection
    deadline = time.monotonic() + 10.0
    while any(psutil.pid_exists(pid) for pid in backends) and time.monotonic() < deadline:
        time.sleep(0.05)


def cpu_line(label: str, cpu: dict[str, float], recipients: int) -> str:
    parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in cpu.items())
    return f"CPU seconds, {label}: {parts}; {sum(cpu.values()) / recipients * 1e6:.1f} µs per recipient"


def start_workers(
    env: dict[str, str], workdir: Path, count: int = 2, *, profile_as: str = ""
) -> dict[str, subprocess.Popen]:
    """Start `count` solo-pool workers on every queue; with `profile_as`, each runs under cProfile."""
    queues = ["default", *(f"dispatch.{slug}" for slug in SLUGS)]
    workers = {}
    logs = {}
    for index in range(1, count + 1):
        name = f"bench{index}"
        logs[name] = workdir / f"{name}.log"
        profile_to = workdir / f"{name}-{profile_as}.prof" if profile_as else None
        workers[name] = start_celery_worker(name, queues=queues, env=env, log=logs[name], profile_to=profile_to)
    deadline = time.monotonic() + 60
    for name, log in logs.items():
        while " ready." not in log.read_text():
            if workers[name].poll() is not None or time.monotonic() > deadline:
                sys.exit(f"Worker {name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
    return workers


def stop(processes) -> None:
    for proc in processes:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def timed_run(
    area_code: str, title: str, env: dict[str, str], workdir: Path, *, simulator_pid: int, profile_as: str = ""
) -> dict:
    """Send one campaign with fresh workers; return recipients, seconds, rate, peak RSS and CPU per process."""
    from django.db.models import Max

    from campaigns.dispatch import runs_start_due
    from campaigns.models import CampaignRun, Delivery, DispatchBatch

    workers = start_workers(env, workdir, profile_as=profile_as)
    sampler = RssSampler({name: proc.pid for name, proc in workers.items()})
    sampler.start()
    try:
        campaign = campaign_scheduled(area_code, title)
        watched = {**{name: proc.pid for name, proc in workers.items()}, "simulator": simulator_pid}
        cpu_before = cpu_seconds(watched)
        runs_start_due()
        run = CampaignRun.objects.get(campaign=campaign)
        deadline = time.monotonic() + 1800
        while True:
            run.refresh_from_db()
            if run.fanout_done:
                open_batches = DispatchBatch.objects.filter(run=run).exclude(status=DispatchBatch.Status.ACCEPTED)
                if not open_batches.exists():
                    break
            if time.monotonic() > deadline:
                sys.exit("The run did not finish within 30 minutes.")
            time.sleep(0.1)
        sampler.sample()
        cpu_after = cpu_seconds(watched)
    finally:
        sampler.stopped.set()
        stop(workers.values())
    last_accepted = DispatchBatch.objects.filter(run=run).aggregate(last=Max("accepted_at"))["last"]
    recipients = Delivery.objects.filter(run=run).count()
    seconds = (last_accepted - run.started_at).total_seconds()
    return {
        "run_id": run.pk,
        "recipients": recipients,
        "batches": DispatchBatch.objects.filter(run=run).count(),
        "seconds": seconds,
        "rate": recipients / seconds,
        "rss_mb": {name: peak / 2**20 for name, peak in sampler.peaks.items()},
        "cpu": cpu_spent(cpu_before, cpu_after),
    }


def outbound_batches(run_id: int, simulator_url: str, *, prefix: str) -> list:
    """Rebuild the run's batches exactly as the adapter sends them, addressed to the `{prefix}-{slug}` operators.

    Fresh slugs per pass: the simulator keeps idempotency records per operator, so a second pass to the same
    slugs would only measure replays.
    """
    from campaigns.models import CampaignRun, Delivery, DispatchBatch
    from operators.gateways.base import OutboundBatch, OutboundMessage

    run = CampaignRun.objects.select_related("campaign").get(pk=run_id)
    recipients: dict = {}
    for batch_id, message_id, msisdn in (
        Delivery.objects.filter(run=run).values_list("batch_id", "pk", "msisdn").order_by("pk").iterator(10_000)
    ):
        recipients.setdefault(batch_id, []).append(OutboundMessage(message_id=str(message_id), msisdn=msisdn))
    batches = []
    for batch in DispatchBatch.objects.filter(run=run).select_related("operator"):
        operator = batch.operator
        batches.append(
            OutboundBatch(
                batch_id=str(batch.pk),
                campaign_id=run.campaign_id,
                campaign_title=run.campaign.title,
                sender=run.sender,
                text=run.text,
                encoding=run.encoding,
                segments=run.segments,
                priority="urgent",
                expires_at=run.expires_at.isoformat(),
                callback_url="",
                recipients=recipients[batch.pk],
                base_url=f"{simulator_url}/{prefix}-{operator.slug}",
                api_key=operator.api_key,
                signing_secret=operator.signing_secret,
            )
        )
    return batches


def _raw_loop(batches, start_at, results) -> None:
    from operators.gateways.http_batch_v1 import HttpBatchV1Adapter

    adapter = HttpBatchV1Adapter()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu_at_start = time.process_time()
    sent = 0
    for batch in batches:
        result = adapter.send_batch(batch)
        if result.outcome != "accepted":
            raise RuntimeError(f"raw send failed: {result}")
        sent += result.accepted
    results.put((sent, time.time(), time.process_time() - cpu_at_start))


def raw_limit(batches: list, processes: int, *, simulator_pid: int) -> tuple[float, dict[str, float]]:
    """Post `batches` from one tight pooled-HTTP loop per process; return recipients per second and CPU seconds."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 1.0
    shares = [batches[i::processes] for i in range(processes)]
    workers = [context.Process(target=_raw_loop, args=(share, start_at, results)) for share in shares]
    simulator_before = cpu_seconds({"simulator": simulator_pid})
    for worker in workers:
        worker.start()
    finished = [results.get(timeout=1800) for _ in workers]
    simulator_after = cpu_seconds({"simulator": simulator_pid})
    for worker in workers:
        worker.join()
    sent = sum(count for count, _, _ in finished)
    cpu = {
        "loops": sum(spent for _, _, spent in finished),
        **cpu_spent(simulator_before, simulator_after),
    }
    return sent / (max(end for _, end, _ in finished) - start_at), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=200_000)
    parser.add_argument("--raw-processes", type=int, default=os.cpu_count() or 2, help="Default: one per core.")
    parser.add_argument("--json", action="store_true", help="Also print the figures as one JSON line.")
    parser.add_argument("--settings", default="config.settings.dev", help="Django settings module of every process.")
    parser.add_argument(
        "--raw-passes",
        type=int,
        default=3,
        help="Post the batches this many times (to fresh operator slugs) for a steadier raw figure.",
    )
    parser.add_argument(
        "--profile", action="store_true", help="Run the full-size workers under cProfile and print where time goes."
    )
    args = parser.parse_args()
    if args.recipients < SMALL * 2:
        sys.exit(f"--recipients must be at least {SMALL * 2}.")
    # No default server: the dispatch benchmark needs DATABASE_URL to name the PostgreSQL it may use.
    url = benchdb.bench_database_from_env("_bench_dispatch", what="bench-dispatch", default=None)
    recreate_database(url)

    workdir = Path(tempfile.mkdtemp(prefix="bench-dispatch-"))
    redis_proc, redis_url = start_redis(workdir)
    simulator_port = free_port()
    simulator_url = f"http://127.0.0.1:{simulator_port}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": args.settings,
        "DEBUG": "False",  # DEBUG keeps every SQL query in memory
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    import django

    django.setup()

    simulator_config = {}
    for slug in SLUGS:
        for name in (slug, *(f"raw{n}-{slug}" for n in range(args.raw_passes))):
            # No report_token: the simulator posts no delivery reports, the figure ends at acceptance.
            simulator_config[name] = {"api_key": f"key-{slug}", "signing_secret": f"secret-{slug}"}
    config_path = workdir / "simulator.json"
    config_path.write_text(json.dumps(simulator_config))
    simulator = start_simulator(config=config_path, port=simulator_port, env=env, log=workdir / "simulator.log")
    try:
        wait_for_port(simulator_port)
        started = time.monotonic()
        seed(args.recipients, simulator_url)
        print(f"seeded {args.recipients:,} subscribers in {time.monotonic() - started:.1f} s", flush=True)

        small = timed_run(SMALL_DISTRICT, "bench small", env, workdir, simulator_pid=simulator.pid)
        full = timed_run(
            "35.05",
            "bench full",
            env,
            workdir,
            simulator_pid=simulator.pid,
            profile_as="full" if args.profile else "",
        )
        batches = [
            batch
            for n in range(args.raw_passes)
            for batch in outbound_batches(full["run_id"], simulator_url, prefix=f"raw{n}")
        ]
        close_database_connections()
        raw, raw_cpu = raw_limit(batches, args.raw_processes, simulator_pid=simulator.pid)

        import requests

        stats = requests.get(f"{simulator_url}/stats", timeout=30).json()
        duplicates = sum(stats[slug]["duplicates"] for slug in SLUGS)
        for label, result in (("10,000", small), (f"{args.recipients:,}", full)):
            rss = ", ".join(f"{name} {mb:.0f} MB" for name, mb in result["rss_mb"].items())
            print(
                f"run {label:>9}: {result['recipients']:,} recipients in {result['batches']} batches, "
                f"{result['seconds']:.2f} s, {result['rate']:,.0f} recipients/s; peak RSS {rss}"
            )
        growth = max(full["rss_mb"][name] - small["rss_mb"][name] for name in full["rss_mb"])
        print(
            f"raw limit ({args.raw_processes} pooled loops, same batches x{args.raw_passes}): {raw:,.0f} recipients/s"
        )
        print(f"pipeline / raw: {full['rate'] / raw:.2f}")
        print(cpu_line(f"full run ({full['seconds']:.2f} s)", full["cpu"], full["recipients"]))
        print(cpu_line("raw", raw_cpu, len(batches) and sum(len(b.recipients) for b in batches)))
        print(f"worker RSS growth from 10,000 to full size: {growth:+.0f} MB; simulator duplicates: {duplicates}")
        if args.profile:
            import pstats

            for path in sorted(workdir.glob("*-full.prof")):
                print(f"--- {path.name} (cumulative)")
                stats = pstats.Stats(str(path)).sort_stats("cumulative")
                stats.print_stats(r"smsblast|campaigns|operators|psycopg", 25)
        if args.json:
            print(
                json.dumps(
                    {
                        "recipients": full["recipients"],
                        "rate": round(full["rate"]),
                        "raw": round(raw),
                        "ratio": round(full["rate"] / raw, 3),
                        "rss_small_mb": {k: round(v) for k, v in small["rss_mb"].items()},
                        "rss_full_mb": {k: round(v) for k, v in full["rss_mb"].items()},
                        "duplicates": duplicates,
                        "cpu_full_s": {k: round(v, 2) for k, v in full["cpu"].items()},
                        "cpu_raw_s": {k: round(v, 2) for k, v in raw_cpu.items()},
                    }
                )
            )
    finally:
        stop([simulator])
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


if __name__ == "__main__":
    main()

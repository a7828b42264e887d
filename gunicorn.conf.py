"""gunicorn reads this file from its working directory by default, even when flags are given on the command
line (command-line settings win; these hooks still run). It prepares Prometheus's multiprocess mode, so that
`GET /metrics` (paygate/ops/metrics_page.py) shows the same totals whichever worker process answers:

* PROMETHEUS_MULTIPROC_DIR names the directory where every worker process writes its metric values. Unset,
  a fresh empty one is made (and removed when gunicorn exits). It is set here, in the master, before any
  worker is forked and imports prometheus_client.
* At master start the directory is emptied of metric files (`*.db`): values left by an earlier run would
  otherwise be added to this one's.
* When a worker process dies, its live gauges are dropped (`multiprocess.mark_process_dead`); its counters
  and histograms stay, so totals never go backwards when gunicorn replaces a worker.

Give gunicorn a directory of its own: the flask `worker` command must not share it (it serves its own
metrics, see README "Metrics and alerts").
"""

import glob
import os
import shutil
import tempfile

_OWNED = "PAYGATE_PROMETHEUS_TMPDIR"  # the directory this file made, removed at exit

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[_OWNED] = tempfile.mkdtemp(prefix="paygate-prometheus-")
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def on_starting(server):
    """Master start (not a reload): drop the metric files of an earlier run."""
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for name in glob.glob(os.path.join(path, "*.db")):
        os.remove(name)
    server.log.info("Prometheus multiprocess directory: %s", path)
    _warn_if_rates_are_per_process(server)


def post_worker_init(worker):
    """A worker is ready: every Price of STRIPE_PRICE_ID that cannot be sold is named in an ERROR now, not at the
    first school's visit (read in the background, after the fork: a thread in the master would be copied into
    every worker mid-flight, its locks held)."""
    try:
        from paygate.application.cli import check_offers_soon

        check_offers_soon(worker.wsgi.config["SETTINGS"])
    except Exception:  # never let this check stop a worker
        worker.log.exception("the start-up check of the offers could not run")


def _warn_if_rates_are_per_process(server):
    """memory:// with several workers makes every rate limit that many times looser: said at start
    (a warning, not a refusal: RATELIMIT_STORAGE_URI is optional, and a deployment that sets only the
    required settings must still start)."""
    try:
        from paygate.core.config import Settings
        from paygate.web.throttling import unshared_store

        settings = Settings()
    except Exception:  # noqa: BLE001 - a bad setting: each worker's start-up names it
        return
    problem = unshared_store(settings.ratelimit_storage_uri, settings.app_env, server.cfg.workers)
    if problem:
        server.log.warning(problem)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    owned = os.environ.get(_OWNED)
    if owned and owned == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(owned, ignore_errors=True)

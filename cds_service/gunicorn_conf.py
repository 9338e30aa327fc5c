"""gunicorn configuration of the service.

    gunicorn -c python:cds_service.gunicorn_conf --bind 127.0.0.1:8080 --workers 2 \\
        'cds_service.app:create_app()'

The bind address, the number of workers and everything else come from the command line; this
module only adds:

- **metrics of all workers**: before the workers start, ``on_starting`` points
  ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory (a temporary one, removed on exit, unless
  the variable names one: that one is created if needed and emptied of earlier runs' files).
  The workers inherit it; each writes its values there, and /metrics adds up those of all of
  them. ``child_exit`` tells prometheus_client when a worker is gone.
- **JSON logs**: gunicorn's error and access logs, and the service's own, one JSON object per
  line on stderr (``LOG_FORMAT=text`` for readable lines). Access lines carry the method, the
  path without its query string, the status, the size and the duration.

- **threads that slow clients cannot hold**: the workers are gthread workers with a deadline
  on reading each request (`cds_service.serving.BoundedThreadWorker`, CDS_CLIENT_TIMEOUT_SECONDS),
  32 threads each unless ``--threads`` says otherwise: a client that stops half-way through its
  body holds one thread for at most the client timeout, and the other threads go on answering.

- **"serving on ..." once the port is bound**: under ``calcinosis-cds serve`` (which checks the
  rest before gunicorn starts), ``when_ready`` (run in the master once the sockets are bound,
  before the workers are forked) prints where the service answers, so the line is true when
  it is read.

- **no collector pauses on start-up objects**: ``post_worker_init`` freezes what loading the
  app made (``gc.freeze``), so full collections during requests stay short.

Not with ``--preload``: the app (and prometheus_client) would be loaded before ``on_starting``,
and each worker would count on its own.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# Imports no prometheus_client: it must first be imported in the workers, once
# PROMETHEUS_MULTIPROC_DIR is set (it reads the variable when imported).
from cds_service.observability import MULTIPROC_ENV, SERVE_BANNER_ENV, gunicorn_logconfig
from cds_service.settings import DEFAULT_THREADS

logconfig_dict = gunicorn_logconfig(os.environ.get("LOG_FORMAT", "").strip().lower() or "json")

# gunicorn 27 opens a control socket shared by every gunicorn of the user (~/.gunicorn): two
# instances on one host would fight over it, and this service needs none. (Older gunicorn
# versions ignore the name.)
control_socket_disable = True

worker_class = "cds_service.serving.BoundedThreadWorker"
threads = DEFAULT_THREADS

_created: list[Path] = []  # directories this master made, removed on exit


def on_starting(server: Any) -> None:
    """Prepare the directory the workers share their metrics in, before they are forked."""
    named = os.environ.get(MULTIPROC_ENV)
    if named:
        shared = Path(named)
        shared.mkdir(parents=True, exist_ok=True)
        for stale in shared.glob("*.db"):  # values of an earlier run
            stale.unlink()
    else:
        shared = Path(tempfile.mkdtemp(prefix="calcinosis-cds-metrics-"))
        _created.append(shared)
        os.environ[MULTIPROC_ENV] = str(shared)  # inherited by every worker
    if server.cfg.preload_app:
        server.log.warning("--preload: each worker counts its own metrics (see gunicorn_conf)")
    server.log.info("metrics of all workers are added up in %s", shared)


def when_ready(server: Any) -> None:
    """The sockets are bound: under `calcinosis-cds serve` (which asks for it with
    SERVE_BANNER_ENV, saying whether the preview page is on), say where the service answers,
    once. gunicorn run by hand logs only JSON; its "Listening at" says the same."""
    banner = os.environ.pop(SERVE_BANNER_ENV, "")  # popped: not inherited by the workers
    if not banner:
        return
    # (With --reuse-port the workers bind, and the master has no listener to name.)
    bound = [str(listener) for listener in server.LISTENERS]
    bound = bound or [f"http://{address}" for address in server.cfg.bind]
    base = bound[0]
    also = "".join(f", {other}" for other in bound[1:])
    print(
        f"calcinosis-cds: serving on {base}{also} with {server.cfg.workers} workers of "
        f"{server.cfg.threads} threads (discovery: {base}/cds-services"
        + (f"; card preview page: {base}/)" if banner == "preview" else ")"),
        file=sys.stderr,
        flush=True,
    )


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: its live gauges no longer count (its counters still do)."""
    from prometheus_client import multiprocess  # imported late: see the module docstring

    multiprocess.mark_process_dead(worker.pid, path=os.environ.get(MULTIPROC_ENV))


def on_exit(server: Any) -> None:
    for shared in _created:
        shutil.rmtree(shared, ignore_errors=True)


def post_worker_init(worker: Any) -> None:
    """The app is loaded: move what start-up made (knowledge, models, schemas: ~100,000
    objects that live as long as the worker) out of the garbage collector's sight, so that a
    full collection during a request no longer walks them (it cost up to 65 ms at p99)."""
    gc.freeze()

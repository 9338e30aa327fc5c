"""Profile the service in process on one benchmark request (pyinstrument, the `bench` extra).

    python -m bench.profiling typical            # 100 requests, call tree on stdout
    python -m bench.profiling large -n 30 --html /tmp/large.html

The same app and requests as ``make bench`` (bench/run.py): create_app with SQLite in a
temporary folder, the Flask test client, a few warm-up requests first.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench import patients
from bench.run import SERVICE_PATH


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profiling", description=__doc__)
    parser.add_argument("size", choices=[s.name for s in patients.SIZES])
    parser.add_argument("-n", type=int, default=100, help="requests profiled")
    parser.add_argument("--interval", type=float, default=0.0005, help="sampling interval, s")
    parser.add_argument("--html", type=Path, help="write an HTML report here")
    args = parser.parse_args()

    from pyinstrument import Profiler

    from cds_service.app import create_app
    from cds_service.settings import Settings

    size = next(s for s in patients.SIZES if s.name == args.size)
    body = patients.body(patients.build(size, datetime.now(UTC).date()))
    logging.getLogger().addHandler(logging.NullHandler())  # keep the report readable
    with tempfile.TemporaryDirectory(prefix="cds-profile-") as tmp:
        app = create_app(
            Settings(
                database_url=f"sqlite:///{Path(tmp) / 'profile.sqlite3'}",
                hash_key="bench-" + uuid.uuid4().hex * 2,
                log_level="WARNING",
            )
        )
        client = app.test_client()

        def post() -> None:
            answer = client.post(SERVICE_PATH, data=body, content_type="application/json")
            assert answer.status_code == 200, answer.get_json()

        for _ in range(5):
            post()
        profiler = Profiler(interval=args.interval)
        profiler.start()
        for _ in range(args.n):
            post()
        profiler.stop()
        app.extensions["cds_engine"].close()
    if args.html:
        args.html.write_text(profiler.output_html(), encoding="utf-8")
        print(f"wrote {args.html}")
    else:
        print(profiler.output_text(unicode=True, color=False))


if __name__ == "__main__":
    main()

"""`python -m cds_service`: the same command as `calcinosis-cds`."""

from cds_service.devtools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

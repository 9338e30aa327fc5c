"""Tests of cds_service/hooks/ (tests/README.md)."""

"""Tests of cds_service/terminology/ (tests/README.md)."""

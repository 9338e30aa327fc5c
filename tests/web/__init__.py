"""Tests of cds_service/web/ (tests/README.md)."""

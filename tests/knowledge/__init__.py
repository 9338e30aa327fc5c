"""Tests of cds_service/knowledge/ (tests/README.md)."""

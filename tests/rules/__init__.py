"""Tests of cds_service/rules/ (tests/README.md)."""

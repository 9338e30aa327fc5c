"""Tests of cds_service/cards/ (tests/README.md)."""

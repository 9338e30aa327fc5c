"""Tests of cds_service/devtools/ (tests/README.md)."""

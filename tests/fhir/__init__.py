"""Tests of cds_service/fhir/ (tests/README.md)."""

"""The test suite, laid out as tests/README.md says; a package, so every folder can import
`tests.conftest` and the shared helpers."""

"""Developer tools on top of the service: the command line, check-knowledge, the fixture set,
the request builder, the code tables of docs/codes.md and the card preview page."""

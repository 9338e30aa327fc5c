"""The CDS Hooks protocol: service definitions, schemas, HTTP routes."""

"""The CDS Hooks protocol, without Flask: JSON Schemas and their validation, service
definitions, the OpenAPI description."""

from pathlib import Path

OPENAPI_FILE = Path(__file__).resolve().parent / "openapi.yaml"

# The hooks whose context carries draft orders under review (context.draftOrders).
ORDER_HOOKS = ("order-select", "order-sign")

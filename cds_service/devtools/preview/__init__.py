"""The card preview page: a developer tool served at "/" when CDS_PREVIEW is on (see routes)."""

from cds_service.devtools.preview.routes import PAGE_CSP, bp

__all__ = ["PAGE_CSP", "bp"]

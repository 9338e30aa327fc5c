"""FHIR R4: prefetch resolution, the patient record, units."""

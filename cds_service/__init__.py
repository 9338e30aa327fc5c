"""CDS Hooks 2.0 service for calcinosis in systemic sclerosis."""

"""Azure Monitor: the audit trail to a Log Analytics / Sentinel table (Logs Ingestion API)."""

"""The service layer: command handling, ingestion, simulated history (API above, log below)."""

"""Data ingestion service: uploads and URLs parsed, cleaned and indexed as jobs."""

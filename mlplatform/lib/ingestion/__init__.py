"""Pure logic of ingestion: landing zone, reading, validation, the ingest step."""

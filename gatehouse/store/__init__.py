"""The durable store: SQL tables, their repositories and migrations (SQLite or PostgreSQL)."""

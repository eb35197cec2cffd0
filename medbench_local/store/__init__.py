"""SQLite results store: schema with named migrations, a crash-safe per-item writer, and read queries."""

from .database import close_database, open_database, reading

__all__ = ["close_database", "open_database", "reading"]

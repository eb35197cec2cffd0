"""SQLite results store: schema with named migrations, a crash-safe per-item writer, and read queries."""

from .database import open_database

__all__ = ["open_database"]

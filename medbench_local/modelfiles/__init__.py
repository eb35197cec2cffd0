"""Model files: where a configured model's GGUF lives, what it is (header metadata) and who it is (SHA-256)."""

from .verdict import Verdict, verify

__all__ = ["Verdict", "verify"]

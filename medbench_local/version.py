"""The package version, in a module of its own at the bottom of the layering: every layer that records it (the
run record, a bundle's manifest, the report's footer, ``--version``) imports it from here, so that the package's
``__init__`` stays free to offer the Python API on top of everything (tests/test_layering.py)."""

__version__ = "0.1.0"

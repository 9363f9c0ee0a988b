"""Its presence puts tests/ on sys.path, so tests import ``_families``; the shared
fixtures live in the repository's top-level conftest.py (doctests need them too)."""

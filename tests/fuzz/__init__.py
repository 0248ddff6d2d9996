"""Property-based fuzzing of every public entry point.

A package, so that this folder's conftest.py is imported as
``fuzz.conftest``: without this file pytest would import it as a second
top-level ``conftest`` module, which replaces tests/conftest.py in
``sys.modules`` and breaks the ``from conftest import ...`` of the other
tests in the same run.
"""

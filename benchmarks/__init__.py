"""fastnet's benchmark suites (pytest-benchmark); `fastnet bench` runs them and reports.

A package so that its ``conftest.py`` and helper modules never clash with the
ones under ``tests/`` when a plain ``pytest`` collects both folders.
"""

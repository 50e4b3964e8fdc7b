"""Test support shared by tests/ and bench/; never installed."""

"""The integration test cases (see quark.selftest)."""

"""Tests of cfexp.serving (the server process)."""

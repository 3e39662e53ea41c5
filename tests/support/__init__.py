"""Test support: real databases, Redis and services started for the suite."""

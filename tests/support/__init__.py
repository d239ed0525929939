"""Test helpers that are real servers, not fakes: see mock_upstream."""

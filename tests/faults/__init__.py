"""Reliability: fault injection for issue 7 ("nothing lost on faults": harness, scenarios, runner and tests) and
API fuzzing of the server's and the router's OpenAPI schemas (test_fuzz.py)."""

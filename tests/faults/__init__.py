"""Fault injection for issue 7 ("nothing lost on faults"): harness, scenarios, runner and tests."""

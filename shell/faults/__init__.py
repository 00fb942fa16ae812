"""``aigq bench faults``: the whole loop under faults, each scenario a known set of events sent
and then counted where it arrived (see docs/faults.md)."""

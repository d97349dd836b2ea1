"""Admission: per-model capacity, priority by tier, fair queueing between orgs, fast shedding."""

"""Monitoring: prediction records, reference, per-class drift reports, and the regeneration policy."""

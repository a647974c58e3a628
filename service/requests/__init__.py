"""Verification requests: work orders from an enterprise to a lab."""

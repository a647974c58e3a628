"""Webhook endpoints of an enterprise or a regulator's region."""

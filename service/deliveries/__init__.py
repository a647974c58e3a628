"""Deliveries of notices: one per target (a webhook, an e-mail address), every attempt recorded."""

"""Notices: reminders, overdue notices, escalations and result events, and their deliveries."""

"""Sealing, unsealing, scrapping and replacing instruments."""

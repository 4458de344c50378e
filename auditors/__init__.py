"""Auditors score records and summarise versions; they never change data."""

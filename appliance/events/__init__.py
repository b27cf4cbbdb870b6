"""Presence and events: who is there, for how long, and what is said about it."""

"""Procedural objects and on-the-fly simulation for pretraining (torch only)."""

"""Data preparation from plain numpy arrays: grouping and input scaling."""

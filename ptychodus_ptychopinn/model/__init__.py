"""Generators (network architectures) and the PINN module (generator + physics)."""

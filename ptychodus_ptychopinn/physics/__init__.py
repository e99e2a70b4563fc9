"""Differentiable physics in torch: propagation, translation, losses. No ptychodus, no Qt."""

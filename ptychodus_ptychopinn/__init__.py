"""PtychoPINN reconstructor for ptychodus: a physics-informed neural network in PyTorch.

The engine (physics, model, data, engine, stitching, model files) knows nothing of
ptychodus or Qt; everything that touches ptychodus lives in :mod:`ptychodus_ptychopinn.plugin`.
"""

__version__ = '0.1.0'

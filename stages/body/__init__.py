"""3D bodies: body models behind one small interface (rig.py), batched fitting to 2D keypoints (fit.py).

Pure torch, no Ray: pipeline/ wraps the fitter in an actor, tests call it directly.
"""

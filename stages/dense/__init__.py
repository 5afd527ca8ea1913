"""Dense humans: per-pixel body part, surface UV, depth and normal of every fitted person (issue 22).

bodies.py poses a frame's people from the bodies rows, parts.py labels anny's surface with DensePose's
24 parts and UVs, raster.py finds the nearest triangle per pixel, render.py turns that into per-person
crops. Pure functions and small classes, no Ray: the actor that runs them per frame lives elsewhere.
"""

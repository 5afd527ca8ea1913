"""Pure compute stages of posepipe.

Nothing in this package imports ray: every stage is a plain class or plain functions that a test
can call directly; `pipeline/` wraps them into Ray actors in one place (`pipeline/graph.py`).
Grouped by concern: io (decode, sink), pose (2D), track, body (3D), eval; batches.py holds the
types they pass, weights.py resolves model files.
"""

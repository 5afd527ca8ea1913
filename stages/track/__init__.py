"""Track ids per video: the tracker, confirmed-only output, appearance re-identification, box helpers."""

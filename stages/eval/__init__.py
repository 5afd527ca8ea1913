"""Scores against ground truth: COCO keypoint AP, PCK, person matching (metrics), MOTA/IDF1 (mot)."""

"""2D pose: the bottom-up network and its grouping (heatmaps, PAFs), the detector and top-down
keypoints, auto/hybrid modes."""

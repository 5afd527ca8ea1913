"""Reading videos and writing outputs: PyAV decode (+ header probe, limits), the Parquet sink (+ any
pyarrow filesystem), the OUT lock, and the tools that read a finished output (summary, exports, render)."""

"""Reading videos and writing outputs: PyAV decode (+ header probe, limits), the Parquet sink (+ any pyarrow filesystem)."""

"""Comparing MLPerf logs of fastcam, reference and NVIDIA runs into the results table."""

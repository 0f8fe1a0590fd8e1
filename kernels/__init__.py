"""Custom kernels (installed as fastcam.kernels)."""

"""Cameras: URIs, sources (picamera2, V4L2, network streams, files, the synthetic world) and grabbers."""

"""Releases: ship an image tag to an environment, roll back, show status, promote beta's image to prod."""

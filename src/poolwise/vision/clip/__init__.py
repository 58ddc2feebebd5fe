"""Any registered pool on the image tower of an open_clip model, and a small CLIP engine."""

from poolwise.vision.clip.towers import create_clip, use_pool

__all__ = ["create_clip", "use_pool"]

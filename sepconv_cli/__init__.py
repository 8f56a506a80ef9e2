"""sepconv: double a video's frame rate with learned separable-kernel interpolation."""

__version__ = "0.1.0"

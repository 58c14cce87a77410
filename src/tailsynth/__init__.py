"""tailsynth: long-tail skin lesion classification with diffusion-synthesised tail samples."""

__version__ = "0.1.0"

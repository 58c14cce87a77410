"""Class-conditional inpainting diffusion: model sizes, training, tail-class synthesis."""

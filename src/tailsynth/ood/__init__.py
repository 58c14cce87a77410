"""OOD post-selection of synthetic candidates, their quality metrics, and the synthesizer's quality gates."""

"""OOD post-selection of synthetic candidates, their quality metrics, and the real-vs-augmented experiment."""

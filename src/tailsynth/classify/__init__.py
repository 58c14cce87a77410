"""Classifier: timm backbones, long-tail losses and samplers, training, evaluation."""

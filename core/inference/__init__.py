"""Inference: model sources and weights, predictions, cached evaluations. Needs nothing from training or insight."""

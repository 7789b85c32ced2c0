"""Insight: comparing runs, explanations (SHAP, LIME, gradients), how far to trust them, layer activations."""

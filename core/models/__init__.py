"""Models: the one zoo of networks (zoo) and the from-scratch NumPy MLP of the Under-the-hood page."""

"""Testing helpers: the NumPy float64 reference implementations."""

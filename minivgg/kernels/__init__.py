"""Our compiled loops (Numba @njit) for the hot paths; the functional ops call them by name."""

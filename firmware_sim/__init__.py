"""cribwatch sensor simulator: speaks exactly what real crib-latch sensor firmware speaks."""

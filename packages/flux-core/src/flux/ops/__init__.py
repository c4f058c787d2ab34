"""The operations on traced values: NumPy's API (operators, ufuncs, functions) translated into
primitives, and flux's own functions and losses, written once in terms of them."""

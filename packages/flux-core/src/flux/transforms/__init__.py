"""Graph transformations: reverse-mode autodiff, unrolling recurrences, carried hidden state."""

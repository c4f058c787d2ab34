"""Built-in layers: model code written with the same notation users write (errors inside them
point at their lines, as the seed's traces point at affine.jl)."""

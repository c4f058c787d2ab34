"""Models: `@net`, `Param`, State fields and `prev`, and the walk over a model's fields."""

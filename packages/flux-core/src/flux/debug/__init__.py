"""What users read about a model: `infer`, the `shapes` printout and `summary`."""

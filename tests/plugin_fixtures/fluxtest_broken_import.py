"""A plugin that cannot be imported (its library is missing)."""
raise ImportError("fluxtest_broken_import needs libmissing-42, which is not installed")

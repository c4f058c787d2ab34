"""A plugin that ends the program when it is imported."""
import sys

sys.exit("fluxtest_exits refuses to load")

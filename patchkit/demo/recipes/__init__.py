"""Training recipes: which data, which reference and which settings make a given patch."""

"""The stories patchkit tells end to end, and the recipes they run on.

- `story`: `patchkit demo`, the vendor-customer-CI story on the real SmolLM2 model.
- `domain_stories`: the same story for the paper's other domains (toxicity, gender bias).
- `domains`: those domains' data, scorers and training specs; `recipes`: the harmfulness recipe.
"""

"""The paper's three domains as data: prompts, reference M', pair scorer, metrics, recipe.

`harmfulness` wraps the demo's current recipe; `toxicity` and `bias` are built here. The demo's
`--domain` path and `benchmarks.safety` read only these specs (`patchkit.demo.domains.spec`), so a
new recipe for a domain drops in by changing its spec.
"""

"""Search: the query language, the planner over segments, the predicate and the oracle."""

"""The video library: who owns what, listing, review decisions, derived pictures."""

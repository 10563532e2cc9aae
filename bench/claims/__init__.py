"""Claims as data, their verdicts, boundary search and the capped check."""

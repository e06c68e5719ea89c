"""The headline answer: the rows, the largest batch, the recommendation, the answer cache."""

"""Small, faithful copies of how libraries write attention models (see each module's notes)."""

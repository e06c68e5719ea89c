"""The cards: the catalogue and what each figure rests on."""

"""Validation against measurements, and the time model's fit."""

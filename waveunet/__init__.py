"""waveunet."""

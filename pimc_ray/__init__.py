"""pimc-ray."""

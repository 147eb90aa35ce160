"""Data quality: feature gates by relationship match rate, data expectations, reports."""

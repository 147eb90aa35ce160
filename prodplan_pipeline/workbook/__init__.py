"""Writing ``.xlsx`` workbooks: a small streaming writer and the synthetic sample generator."""

"""Daily aggregates, current work in progress, and the materialized views over them."""

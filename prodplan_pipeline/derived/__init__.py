"""After the merge: derived (backfilled) columns and the reconciliation of orphans."""

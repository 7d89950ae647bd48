"""The lane catalog's schema: one SQL file per version (protocol.schema runs them)."""

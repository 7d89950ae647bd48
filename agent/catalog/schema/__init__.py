"""The lane catalog's schema: one SQL file per version (protocol.runtime.migrations runs them)."""

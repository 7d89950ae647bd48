"""Head office's catalog: master data loaded as versions and sent down to each store's lanes
(protocol/CATALOG.md)."""

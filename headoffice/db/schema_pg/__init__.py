"""PostgreSQL migrations of the head-office database, one file per version (mirrors schema/)."""

"""Reports for people (the incident log's statistics and charts): pure functions over plain data, no I/O."""

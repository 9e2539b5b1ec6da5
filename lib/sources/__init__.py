"""Profile sources: each returns profiles (and music preferences) in the storage schema."""

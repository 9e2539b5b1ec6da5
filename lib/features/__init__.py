"""Features: one fitted, versioned preprocessor turns a profile into the towers' input vector."""

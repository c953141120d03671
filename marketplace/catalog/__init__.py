"""The market's catalog: regions and categories with their prices, read from the settings."""

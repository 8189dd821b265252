"""See what registers do: attribution maps, their comparison across models, artifacts and register roles."""

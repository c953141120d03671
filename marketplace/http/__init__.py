"""HTTP plumbing shared by every controller: access rules, problem+json, units of work."""

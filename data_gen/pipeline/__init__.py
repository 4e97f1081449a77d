"""The generation stages: profiles, Context-Instruct, RoleGPT, cleaning, shards."""

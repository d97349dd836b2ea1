"""Identity: who is asking — an API key or a web session — as a Principal with a tier."""

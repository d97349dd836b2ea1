"""Reading and checking OpenAI request bodies: a clear 400 for every malformed request."""

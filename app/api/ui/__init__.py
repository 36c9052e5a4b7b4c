"""The web pages managers open every morning: server-rendered from the read models."""

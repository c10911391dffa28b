"""Serving a policy over an OpenAI-compatible API: the local server and the vLLM launcher."""

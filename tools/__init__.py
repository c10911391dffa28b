"""LangChain tools used by the environments; each is usable on its own by any agent."""

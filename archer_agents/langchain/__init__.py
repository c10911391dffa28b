"""The LangChain face: the chat model, the agent, the episode recorder, the LangSmith import."""

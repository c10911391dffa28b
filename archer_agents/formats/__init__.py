"""How an episode is written for a model: prompt rendering and tool-call parsing."""

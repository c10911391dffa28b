"""Question games: Twenty Questions and Guess My City over one oracle."""

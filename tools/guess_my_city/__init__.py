"""Guess My City's tools: the city data, the phrasings understood, and the oracle.

- `cities`: the city database models and `load_city_database`;
- `phrasings`: the question templates and paraphrase tables (data);
- `oracle`: `GuessMyCityOracle`, which reads a free-form question and answers it
  about a hidden city, and `make_guess_my_city_tool`, its LangChain tool.
"""
